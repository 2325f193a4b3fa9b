"""The ElevenLabs client against the fake ElevenLabs (documented wire protocol, real Piper audio) over loopback,
and one phone call through the real server with an ElevenLabs agent."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import LiveServer, finished_call
from fakes.elevenlabs import FakeElevenLabs
from fakes.serve import serve_app
from fakes.speech import speech_backend
from speechutil import fuzzy_ratio, leading_text, resample

from telebridge.config import TTS
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import ProviderAuthError, ProviderError
from telebridge.providers.health import ProviderHealth
from telebridge.providers.retry import RetryPolicy
from telebridge.providers.tts import elevenlabs
from telebridge.settings import Settings

KEY = "el-test-key-0123456789"
SENTENCE = "The quick brown fox jumps over the lazy dog."
VOICE = TTS.Voice(id="VoiceAbc123", name="Test", category="premade",
                  settings=TTS.VoiceSettings(stability=0.3, similarity_boost=0.6, style=0.1, use_speaker_boost=False))


def make(origin: str, *, phone: bool = False, **fields) -> elevenlabs.ElevenLabsEngine:
    fields.setdefault("api_key", KEY)
    fields.setdefault("voice", VOICE)
    cfg = TTS.ElevenLabs(base_url=origin, **fields)
    ctx = ProviderContext(Settings(_env_file=None), None, ProviderHealth(), phone=phone)  # type: ignore[arg-type]
    engine = elevenlabs.create(cfg, ctx)
    engine.retry_policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
    return engine


async def collect(session, text: str, reply_id: int = 1) -> tuple[np.ndarray, list[float]]:
    chunks, times = [], []
    async for chunk in session.stream(text, reply_id=reply_id):
        chunks.append(chunk)
        times.append(time.monotonic())
    assert all(c.dtype == np.int16 for c in chunks)
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.int16)), times


async def heard(pcm: np.ndarray, rate: int) -> str:
    return await speech_backend().transcribe(resample(pcm.astype(np.float32) / 32768.0, rate, 16000))


async def poll(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_wire_protocol_every_field_and_phone_format(caplog):
    caplog.set_level(logging.DEBUG)
    fake = FakeElevenLabs(api_key=KEY)
    async with serve_app(fake.app) as origin:
        engine = make(origin, phone=True, model="eleven_flash_v2_5", enable_ssml_parsing=True,
                      chunk_length_schedule=[50, 90, 120, 150])
        assert engine.sample_rate == 8000 and engine.fmt == "ulaw_8000"
        await engine.check()
        session = await engine.open_session(call_id="CA0001")
        pcm, _ = await collect(session, SENTENCE)
        assert fuzzy_ratio(SENTENCE, await heard(pcm, 8000)) > 0.8
        await session.aclose()
    sock = fake.sockets[0]
    assert sock["path"] == "/v1/text-to-speech/VoiceAbc123/multi-stream-input"
    assert sock["query"]["model_id"] == "eleven_flash_v2_5"
    assert sock["query"]["output_format"] == "ulaw_8000"
    assert sock["query"]["enable_ssml_parsing"] == "true"
    assert sock["key_ok"] and "key_in_query" not in sock
    first, text, close = sock["messages"][:3]
    assert first["text"] == " " and first["voice_settings"] == VOICE.settings.model_dump()
    assert first["generation_config"] == {"chunk_length_schedule": [50, 90, 120, 150]}
    assert text == {"text": SENTENCE + " ", "context_id": first["context_id"], "flush": True}
    assert close == {"context_id": first["context_id"], "close_context": True}
    assert sock["messages"][-1] == {"close_socket": True}
    assert fake.requests[0]["path"] == "/v1/user" and fake.requests[0]["key_ok"]
    everything = caplog.text + " ".join(str(s["query"]) + s["path"] for s in fake.sockets + fake.requests)
    assert KEY not in everything and KEY not in repr(engine)


async def test_formats_default_pcm_explicit_mp3_and_explicit_encoding_on_a_phone(tmp_path):
    fake = FakeElevenLabs(api_key=KEY)
    async with serve_app(fake.app) as origin:
        plain = make(origin)
        assert (plain.fmt, plain.sample_rate) == ("pcm_22050", 22050)  # the default mp3_22050_32's rate, as PCM
        mp3 = make(origin, encoding="mp3_22050_32")
        phone_pcm = make(origin, phone=True, encoding="pcm_16000")
        assert (phone_pcm.fmt, phone_pcm.sample_rate) == ("pcm_16000", 16000)
        for engine in (plain, mp3, phone_pcm):
            session = await engine.open_session(call_id="CA0002")
            pcm, _ = await collect(session, SENTENCE)
            await session.aclose()
            assert fuzzy_ratio(SENTENCE, await heard(pcm, engine.sample_rate)) > 0.8, engine.fmt
        whole = await mp3.synthesize(SENTENCE)  # REST
        assert fuzzy_ratio(SENTENCE, await heard(whole, 22050)) > 0.8
    assert [s["query"]["output_format"] for s in fake.sockets] == ["pcm_22050", "mp3_22050_32", "pcm_16000"]
    rest = [r for r in fake.requests if r["path"].endswith("/stream")][0]
    assert rest["path"] == "/v1/text-to-speech/VoiceAbc123/stream" and rest["query"]["output_format"] == "mp3_22050_32"
    assert rest["body"] == {"text": SENTENCE, "model_id": "eleven_turbo_v2_5", "voice_settings": VOICE.settings.model_dump()}


async def test_chunks_stream_before_the_sentence_ends_and_one_socket_serves_every_reply():
    fake = FakeElevenLabs(api_key=KEY, chunk_delay=0.15, pieces=5)
    async with serve_app(fake.app) as origin:
        engine = make(origin)
        session = await engine.open_session(call_id="CA0003")
        _, times = await collect(session, SENTENCE, reply_id=1)
        assert len(times) >= 4 and times[-1] - times[0] > 0.4  # audio arrived while the sentence was generating
        await collect(session, "Second sentence of the reply.", reply_id=1)
        await collect(session, "A new reply.", reply_id=2)
        await session.aclose()
    assert len(fake.sockets) == 1 and session.connects == 1
    opens = [m for m in fake.sockets[0]["messages"] if m.get("text") == " "]
    assert len(opens) == 3 and "voice_settings" in opens[0]
    assert all("voice_settings" not in m and "generation_config" not in m for m in opens[1:])


async def test_cancel_stops_the_generation_at_the_provider_and_rapid_barge_ins_never_kill_the_session():
    fake = FakeElevenLabs(api_key=KEY, chunk_delay=0.25, pieces=8)
    async with serve_app(fake.app) as origin:
        engine = make(origin)
        session = await engine.open_session(call_id="CA0004")
        for reply in range(1, 9):  # eight barge-ins in a row, faster than any reply can finish
            stream = session.stream(f"Reply number {reply} is a rather long sentence that gets interrupted.",
                                    reply_id=reply)
            await stream.__anext__()
            await session.cancel(reply)
            rest = [c async for c in stream]
            assert len(rest) <= 1  # the stream ends at once (at most a chunk already queued)
        await poll(lambda: len(fake.cancelled) >= 8)
        pcm, _ = await collect(session, SENTENCE, reply_id=99)
        assert fuzzy_ratio(SENTENCE, await heard(pcm, 22050)) > 0.8
        await session.aclose()
    assert "max_active_conversations" not in fake.errors_sent
    # Each interrupted context got close_context on the wire before its socket was dropped.
    closes = [m["context_id"] for s in fake.sockets for m in s["messages"] if m.get("close_context")]
    assert set(fake.cancelled) <= set(closes)


async def test_a_socket_closed_by_the_server_is_reopened_and_a_cut_sentence_fails_fast():
    fake = FakeElevenLabs(api_key=KEY, drop_after_chunks=2, pieces=4)
    async with serve_app(fake.app) as origin:
        engine = make(origin)
        session = await engine.open_session(call_id="CA0005")
        started = time.monotonic()
        with pytest.raises(ProviderError, match="cut off"):
            await collect(session, SENTENCE)
        assert time.monotonic() - started < 5
        fake.drop_after_chunks = None
        pcm, _ = await collect(session, SENTENCE, reply_id=2)  # a fresh socket
        assert len(pcm) > 0 and len(fake.sockets) == 2
        # The service closes an idle socket (inactivity, or 1008 when contexts run out): the next sentence
        # reconnects before its first byte, transparently.
        await session._conn.ws.close(code=1008, reason="Have not received a new text input within the timeout")
        pcm, _ = await collect(session, "After the idle close.", reply_id=3)
        assert len(pcm) > 0 and len(fake.sockets) == 3
        await session.aclose()
    assert engine.ctx.health.snapshot()["tts.elevenlabs"]["errors_by_kind"].get("disconnected") == 1


@pytest.mark.parametrize("style", ["message", "handshake"])
async def test_a_bad_key_is_an_auth_error_naming_the_variable(style, caplog):
    fake = FakeElevenLabs(api_key=KEY, auth_style=style)
    async with serve_app(fake.app) as origin:
        engine = make(origin, api_key="wrong-key-zzz")
        with pytest.raises(ProviderAuthError, match="ELEVENLABS_API_KEY"):
            await engine.check()
        with pytest.raises(ProviderAuthError, match="ELEVENLABS_API_KEY"):
            await engine.check()  # cached failure: no second request
        assert len(fake.requests) == 1
        session = await engine.open_session(call_id="CA0006")
        with pytest.raises(ProviderAuthError, match="ELEVENLABS_API_KEY"):
            await collect(session, SENTENCE)
        await session.aclose()
        missing = make(origin, api_key=None)
        missing.cfg.api_key = None
        with pytest.raises(ProviderAuthError, match="ELEVENLABS_API_KEY"):
            await missing.check()
    assert "wrong-key-zzz" not in caplog.text


async def test_429_and_5xx_are_retried_then_succeed():
    fake = FakeElevenLabs(api_key=KEY, statuses=[429, 503])
    async with serve_app(fake.app) as origin:
        engine = make(origin)
        session = await engine.open_session(call_id="CA0007")  # the warm-up connect meets the 429
        pcm, _ = await collect(session, SENTENCE)
        assert len(pcm) > 0 and fake.statuses == []
        fake.statuses = [503]
        assert len(await engine.synthesize("Hello there.")) > 0
        fake.statuses = [429, 429, 429]
        with pytest.raises(ProviderError, match="429"):
            await engine.synthesize("Hello there.")
        await session.aclose()


async def test_slow_first_byte_is_retried_then_fails_and_malformed_frames_fail():
    await speech_backend().synthesize("Warm up.", 8000)  # the fake's models load outside the timed part
    fake = FakeElevenLabs(api_key=KEY, slow_first_byte=4.0, slow_times=1)
    async with serve_app(fake.app) as origin:
        engine = make(origin)
        engine.first_byte_timeout = 1.5  # generous: the fake's Piper shares 2 cores with the other workers
        session = await engine.open_session(call_id="CA0008")
        pcm, _ = await collect(session, SENTENCE)  # first attempt too slow, the retry answers
        assert len(pcm) > 0
        fake.slow_times = 100
        started = time.monotonic()
        with pytest.raises(ProviderError, match="first-byte"):
            await collect(session, SENTENCE, reply_id=2)
        assert time.monotonic() - started < 8  # three attempts of 1.5 s, then the error: no hang
        fake.slow_first_byte, fake.malformed = 0.0, True
        engine.first_byte_timeout = 5.0
        with pytest.raises(ProviderError, match="malformed"):
            await collect(session, SENTENCE, reply_id=3)
        await session.aclose()


# --- one phone call through the real server ------------------------------------------------------------------

AGENT = str(Path(__file__).parent / "agents" / "elevenlabs_agent.py")


async def test_phone_call_with_an_elevenlabs_agent(auth_token, monkeypatch):
    from agents.elevenlabs_agent import ANSWER, GREETING, KEY as AGENT_KEY
    from telebridge.simulator import Say, simulate_call  # noqa: I001 (imported late: it is heavy)

    fake = FakeElevenLabs(api_key=AGENT_KEY)
    async with serve_app(fake.app) as origin:
        srv = LiveServer(agent=AGENT, elevenlabs_base_url=origin).start()
        try:
            call = await simulate_call(srv.url, script=[Say(at=None, text="What are your opening hours?",
                                                            after_agent_quiet=0.6)],
                                       auth_token=auth_token, duration=25, end_when_quiet=1.5, transcribe=True)
            record = await finished_call(srv, call.call_sid)
        finally:
            srv.stop()
    assert record.call_id == call.call_sid
    said = [seg.text for seg in call.agent_segments]
    greeting, rest = leading_text(call.agent_segments, GREETING)
    assert fuzzy_ratio(GREETING, greeting) > 0.7, said
    assert fuzzy_ratio(ANSWER, rest) > 0.6, said
    sock = fake.sockets[0]
    assert sock["query"]["output_format"] == "ulaw_8000" and sock["path"].endswith("/VoiceAbc123/multi-stream-input")
    assert len(fake.sockets) == 1  # one socket for the whole call
