"""The real Cartesia client against a local fake speaking Cartesia's documented WebSocket/HTTP protocol."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import numpy as np
import pytest

from fakes.cartesia import FakeCartesia
from fakes.serve import serve_app
from fakes.speech import speech_backend
from speechutil import fuzzy_ratio, leading_text, resample
from telebridge.config import TTS
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import ProviderAuthError, ProviderError
from telebridge.providers.health import ProviderHealth
from telebridge.providers.tts.cartesia import create
from telebridge.settings import Settings

KEY = "sk_car_test_0123456789"
SENTENCE = "The quick brown fox jumps over the lazy dog."
SECOND = "Then it ran all the way home."



@pytest.fixture(autouse=True, scope="module")
def _warm_speech():
    """Load the fake's Piper/Whisper before any test times a first byte (a cold load takes seconds)."""
    speech_backend().piper_rate


def engine_for(origin: str, *, phone: bool = False, **fields):
    fields.setdefault("api_key", KEY)
    cfg = TTS.Cartesia(base_url=origin, **fields)
    ctx = ProviderContext(Settings(_env_file=None), None, ProviderHealth(), phone=phone)  # type: ignore[arg-type]
    return create(cfg, ctx)


async def collect(session, text: str, reply_id: int) -> list[np.ndarray]:
    return [chunk async for chunk in session.stream(text, reply_id=reply_id)]


async def heard(chunks: list[np.ndarray], rate: int) -> str:
    audio = np.concatenate(chunks).astype(np.float32) / 32768.0
    return await speech_backend().transcribe(resample(audio, rate, 16000))


async def poll(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_phone_call_streams_mulaw_with_every_field_mapped():
    fake = FakeCartesia(api_key=KEY, pace=8.0)
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin, phone=True, model="sonic-english", language="en", speed="fast",
                            emotion=["positivity:high", "curiosity"], voice="a0e99841-438c-4a64-b679-ae501e7d6091")
        assert engine.sample_rate == 8000
        await engine.check()
        await engine.check()  # cached
        session = await engine.open_session(call_id="CA1")
        chunks, first_at_sent = [], None
        async for chunk in session.stream(SENTENCE, reply_id=1):
            if not chunks:
                first_at_sent = fake.chunks_sent
            chunks.append(chunk)
        await session.end_reply(1)
        await poll(lambda: any(m.get("continue") is False for m in fake.messages))
        await session.aclose()
    assert session.sample_rate == 8000 and all(c.dtype == np.int16 for c in chunks)
    assert len(chunks) > 3 and first_at_sent < fake.chunks_sent  # audio flowed before the sentence was done
    assert fuzzy_ratio(SENTENCE, await heard(chunks, 8000)) > 0.8

    assert [r["path"] for r in fake.http_requests] == ["/voices"]
    assert fake.http_requests[0]["query"] == {"limit": "1"}
    (hs,) = fake.handshakes
    assert hs["path"] == "/tts/websocket" and hs["query"] == {}
    assert hs["headers"]["x-api-key-present"] and hs["headers"]["cartesia-version"] == "2024-11-13"
    text, flush, end = fake.messages
    assert text["transcript"] == SENTENCE + " " and text["continue"] is True and "flush" not in text
    assert text["model_id"] == "sonic-english" and text["language"] == "en"
    assert text["output_format"] == {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000}
    assert text["voice"] == {"mode": "id", "id": "a0e99841-438c-4a64-b679-ae501e7d6091",
                             "__experimental_controls": {"speed": "fast", "emotion": ["positivity:high", "curiosity"]}}
    assert flush["transcript"] == "" and flush["continue"] is True and flush["flush"] is True
    assert end["transcript"] == "" and end["continue"] is False
    assert text["context_id"] == flush["context_id"] == end["context_id"]


async def test_pcm_format_embedding_voice_float_speed_and_explicit_encoding_on_phone():
    fake = FakeCartesia(api_key=KEY)
    embedding = [0.01 * i for i in range(192)]
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin, sample_rate=16000, voice=embedding, speed=-0.5)
        assert engine.sample_rate == 16000
        session = await engine.open_session(call_id="CA2")
        chunks = await collect(session, "Hello.", 1)
        await session.aclose()
        phone_pcm = engine_for(origin, phone=True, encoding="pcm_s16le", sample_rate=22050)
        assert phone_pcm.sample_rate == 22050
        whole = await phone_pcm.synthesize("Hello there.")
    assert sum(len(c) for c in chunks) > 1600
    msg = fake.messages[0]
    assert msg["output_format"] == {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000}
    assert msg["voice"] == {"mode": "embedding", "embedding": embedding, "__experimental_controls": {"speed": -0.5}}
    body = fake.http_requests[-1]["body"]
    assert fake.http_requests[-1]["path"] == "/tts/bytes"
    assert body["output_format"] == {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 22050}
    assert body["transcript"] == "Hello there." and whole.dtype == np.int16 and len(whole) > 22050 // 2


async def test_sentences_share_a_context_and_cancel_reaches_the_provider():
    fake = FakeCartesia(api_key=KEY, pace=2.0)
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin)
        session = await engine.open_session(call_id="CA3")
        first = await collect(session, SENTENCE, 7)
        stream = session.stream(SECOND, reply_id=7)
        got = await anext(stream)  # barge-in after the first chunk of the second sentence
        await stream.aclose()
        await session.cancel(7)
        await poll(lambda: len(fake.cancels) == 1)
        # The next reply starts clean on a new context.
        after = await collect(session, "Okay.", 8)
        await session.aclose()
    assert first and len(got) and after
    ids = fake.context_ids()
    assert len(ids) == 2 and fake.cancels == [ids[0]]
    assert [m["transcript"] for m in fake.generations(ids[0])] == [SENTENCE + " ", "", SECOND + " ", ""]


async def test_context_expired_between_sentences_continues_on_a_new_one():
    fake = FakeCartesia(api_key=KEY)
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin)
        engine.context_idle = 60.0  # only the server's word counts here
        session = await engine.open_session(call_id="CA4")
        assert await collect(session, "First sentence.", 1)
        fake.expire_contexts()
        second = await collect(session, SECOND, 1)
        engine.context_idle = 0.0  # and a sentence after an idle gap starts a fresh context up front
        third = await collect(session, "Third one.", 1)
        await session.aclose()
    assert second and third
    ids = fake.context_ids()
    assert len(ids) == 3, ids
    assert [m["transcript"] for m in fake.generations(ids[1])] == [SECOND + " ", ""]
    assert len(fake.handshakes) == 1


async def test_reconnects_when_the_socket_closed_between_replies():
    fake = FakeCartesia(api_key=KEY)
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin)
        session = await engine.open_session(call_id="CA5")
        assert await collect(session, "One.", 1)
        await session.end_reply(1)
        await fake.drop_connections()
        assert await collect(session, "Two.", 2)
        await session.aclose()
    assert len(fake.handshakes) == 2


async def test_auth_refused_and_missing_key(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    fake = FakeCartesia(api_key="sk_car_the_right_one")
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin)
        with pytest.raises(ProviderAuthError) as info:
            await engine.check()
        assert "CARTESIA_API_KEY" in str(info.value)
        with pytest.raises(ProviderAuthError):
            await engine.check()  # the failure is cached
        assert len(fake.http_requests) == 1
        with pytest.raises(ProviderAuthError):
            await engine.open_session(call_id="CA6")
        monkeypatch.delenv("CARTESIA_API_KEY", raising=False)
        keyless = engine_for(origin, api_key=None)
        with pytest.raises(ProviderAuthError, match="CARTESIA_API_KEY"):
            await keyless.check()
        assert engine.ctx.health.snapshot()["tts.cartesia"]["errors_by_kind"].get("auth")
    records = fake.handshakes + fake.http_requests
    assert KEY not in caplog.text and KEY not in repr(records) and KEY not in str(info.value)


async def test_429_and_5xx_are_retried_then_succeed(caplog):
    caplog.set_level(logging.DEBUG)
    fake = FakeCartesia(api_key=KEY, statuses=[429, 503])
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin)
        session = await engine.open_session(call_id="CA7")
        assert await collect(session, "Hi.", 1)
        await session.aclose()
        fake.statuses = [500]
        await engine.check()
        fake.statuses = [429]
        assert len(await engine.synthesize("Hi.")) > 0
    assert len(fake.handshakes) == 3 and len(fake.http_requests) == 4
    assert KEY not in caplog.text


@pytest.mark.parametrize("fault", ["disconnect", "malformed"])
async def test_mid_stream_faults_raise_without_hanging(fault):
    fake = FakeCartesia(api_key=KEY)
    if fault == "disconnect":
        fake.disconnect_after_chunks = 2
    else:
        fake.malformed_after_chunks = 2
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin)
        session = await engine.open_session(call_id="CA8")
        chunks = []
        started = time.monotonic()
        with pytest.raises(ProviderError):
            async for chunk in session.stream(SENTENCE, reply_id=1):
                chunks.append(chunk)
        assert time.monotonic() - started < 5.0
        assert len(chunks) == 2  # what arrived was delivered; nothing was replayed
        assert await collect(session, "Back again.", 2)  # the session recovers on a new socket
        await session.aclose()
    kinds = engine.ctx.health.snapshot()["tts.cartesia"]["errors_by_kind"]
    assert kinds == ({"disconnected": 1} if fault == "disconnect" else {"protocol": 1})


async def test_slow_first_byte_times_out_after_retries():
    fake = FakeCartesia(api_key=KEY, slow_first_byte=3.0)
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin)
        engine.first_byte_timeout = 0.3
        session = await engine.open_session(call_id="CA9")
        started = time.monotonic()
        with pytest.raises(ProviderError, match="no audio within"):
            await collect(session, "Hello.", 1)
        elapsed = time.monotonic() - started
        await session.aclose()
    assert elapsed < 4.0
    assert len(fake.context_ids()) == 3  # three attempts, each on a fresh context
    assert engine.ctx.health.snapshot()["tts.cartesia"]["errors_by_kind"] == {"timeout": 1}


async def test_call_speaks_through_cartesia_and_barge_in_cancels_at_the_provider(auth_token):
    from pathlib import Path

    from agents.cartesia_agent import API_KEY, GREETING, STORY
    from conftest import LiveServer, finished_call
    from fakes.serve import ThreadedApp
    from telebridge.simulator import Say, simulate_call

    fake = FakeCartesia(api_key=API_KEY, pace=1.0)  # audio generated in real time: the story is still coming
    app = ThreadedApp(fake.app).start()
    server = LiveServer(agent=str(Path(__file__).parent / "agents" / "cartesia_agent.py"),
                        cartesia_base_url=app.origin).start()
    try:
        call = await simulate_call(
            server.url,
            script=[Say(at=None, text="Please tell me a story.", after_agent_quiet=0.8),
                    Say(at=None, text="Sorry, can you stop for a second? I have a question about the museum and "
                        "the opening hours on the weekend.",
                        after_agent_speech=2.0)],
            # Quiet long enough after the barge-in for the server to hear it and commit the interruption.
            auth_token=auth_token, duration=40, end_when_quiet=3.0, transcribe=True,
        )
        record = await finished_call(server, call.call_sid)
        with contextlib.suppress(AssertionError):
            await poll(lambda: bool(fake.cancels))
    finally:
        server.stop()
        app.stop()
    assert fuzzy_ratio(GREETING, leading_text(call.agent_segments, GREETING)[0]) > 0.8, call.agent_segments
    assert len(fake.handshakes) == 1 and fake.handshakes[0]["query"] == {}  # one socket for the whole call
    story_ctx = next(m["context_id"] for m in fake.generations() if m["transcript"].startswith("Once upon"))
    assert fake.cancels == [story_ctx], (record.metrics.events, record.history)
    assert all(m["output_format"] == {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000}
               for m in fake.generations())
    said = [m["content"] for m in record.history if m["role"] == "assistant"]
    assert said[0] == GREETING and said[1] != STORY  # the story was cut off
