"""The Deepgram clients (live STT, Aura TTS) against a fake Deepgram speaking the documented wire protocol over
loopback, with real speech behind it (Whisper transcribes what the client sends, Piper speaks)."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace

import numpy as np
import pytest

from fakes.deepgram import FakeDeepgram
from fakes.serve import serve_app
from fakes.speech import speech_backend
from speechutil import fuzzy_ratio, phone_line, resample, synth
from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode
from telebridge.config import STT, TTS
from telebridge.providers.context import ProviderContext
from telebridge.providers.deepgram_protocol import listen_params
from telebridge.providers.errors import ProviderAuthError, ProviderError
from telebridge.providers.health import ProviderHealth
from telebridge.providers.retry import RetryPolicy
from telebridge.providers.stt import deepgram as dg_stt
from telebridge.providers.tts import deepgram as dg_tts

KEY = "dg-test-key-0123456789"
QUESTION = "What time does the pharmacy open tomorrow morning?"
SENTENCE = "Thanks for calling, the pharmacy opens at nine in the morning."


@pytest.fixture(scope="module", autouse=True)
def _speech_loaded():
    """Whisper and Piper load once (seconds) before the timing-sensitive tests."""
    speech_backend()._models()


def make_ctx(phone: bool = False) -> ProviderContext:
    return ProviderContext(settings=SimpleNamespace(), pool=None, health=ProviderHealth(), phone=phone)


def stt_engine(origin: str, *, phone: bool = False, **cfg) -> dg_stt.DeepgramSTT:
    engine = dg_stt.create(STT.Deepgram(api_key=KEY, base_url=origin, **cfg), make_ctx(phone))
    engine.reconnect_policy = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.2)
    engine.finalize_timeout = 10.0  # the fake's Whisper shares 2 busy cores; Deepgram answers in ~0.1 s
    return engine


def tts_engine(origin: str, *, phone: bool = False, key: str = KEY, **cfg) -> dg_tts.DeepgramTTS:
    engine = dg_tts.create(TTS.Deepgram(api_key=key, base_url=origin, **cfg), make_ctx(phone))
    engine.policy = RetryPolicy(attempts=2, base_delay=0.05, max_delay=0.1)
    engine.first_byte_timeout = 20.0  # Piper in the fake shares 2 busy cores
    return engine


def caller_audio(text: str = QUESTION, lead: float = 0.3, tail: float = 0.0) -> np.ndarray:
    """What a caller's question sounds like after the μ-law phone leg, at 8 kHz."""
    speech = phone_line(synth(text, 8000))
    return np.concatenate([np.zeros(int(lead * 8000), np.float32), speech, np.zeros(int(tail * 8000), np.float32)])


async def feed(stream, x: np.ndarray, rate: int = 8000, speed: float = 4.0) -> None:
    """20 ms frames, paced at ``speed`` × real time."""
    n = rate // 50
    for i in range(0, len(x), n):
        stream.feed(x[i : i + n])
        if (i // n) % 5 == 4:
            await asyncio.sleep(0.1 / speed)


async def poll(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def speech_span(x: np.ndarray, rate: int = 8000) -> tuple[float, float]:
    voiced = np.flatnonzero(np.abs(x) > 0.02)
    return voiced[0] / rate, voiced[-1] / rate


# --- query mapping (sans-I/O) --------------------------------------------------------------------------------


def test_every_jay_field_maps_to_its_query_parameter():
    cfg = STT.Deepgram(api_key=KEY, model="nova-2-phonecall", language="en-GB", interim_results=False,
                       punctuate=False, smart_format=False, sample_rate=24000, no_delay=False, endpointing_ms=300,
                       filler_words=False, keywords=[("Telebridge", 2.0), ("Jay", 1.5)], profanity_filter=True)
    params = listen_params(cfg, encoding="linear16", sample_rate=cfg.sample_rate)
    assert params == [
        ("model", "nova-2-phonecall"), ("language", "en-GB"), ("punctuate", "false"), ("smart_format", "false"),
        ("filler_words", "false"), ("profanity_filter", "true"), ("keywords", "Telebridge:2"), ("keywords", "Jay:1.5"),
        ("encoding", "linear16"), ("sample_rate", "24000"), ("channels", "1"), ("interim_results", "false"),
        ("no_delay", "false"), ("endpointing", "300"),
    ]
    nova3 = STT.Deepgram(api_key=KEY, model="nova-3", keywords=[("Telebridge", 2.0)], endpointing_ms=0)
    p3 = dict(listen_params(nova3, encoding="mulaw", sample_rate=8000))
    assert p3["keyterm"] == "Telebridge" and "keywords" not in p3  # Nova-3: Keyterm Prompting, no intensifier
    assert p3["endpointing"] == "false"  # 0 ms would mean "never": Deepgram disables it with false


# --- live STT ------------------------------------------------------------------------------------------------


async def test_phone_stream_sends_the_callers_mulaw_bit_exactly_and_transcribes_it():
    fake = FakeDeepgram(KEY)
    async with serve_app(fake.app) as origin:
        engine = stt_engine(origin, phone=True, keywords=[("pharmacy", 2.0)])
        assert engine.stream_rate == 8000
        stream = await engine.open_stream(input_rate=8000, call_id="CAphone")
        x = caller_audio(tail=0.2)
        await feed(stream, x)
        start, end = speech_span(x)
        transcript = await stream.transcript(start, end)
        await stream.aclose()
    record = fake.listens[0]
    assert record.url.split("?")[0].endswith("/v1/listen")
    q = {k: v[0] for k, v in record.query.items()}
    assert q["encoding"] == "mulaw" and q["sample_rate"] == "8000" and q["keywords"] == "pharmacy:2"
    assert q["model"] == "nova-2-general" and q["interim_results"] == "true" and q["endpointing"] == "25"
    assert record.headers["authorization"] == "Token ***"  # the fake saw "Token <key>" (it checked it)
    assert bytes(record.audio) == ulaw_encode(x)[: len(record.audio)]  # bit-exact re-encode
    assert len(record.audio) >= len(x) - 800
    assert max(record.sizes[:-1]) == 800 == min(record.sizes[:-1])  # ~100 ms per message
    assert fuzzy_ratio(QUESTION, transcript.text) > 0.6, transcript.text
    assert "CloseStream" in record.controls and record.close_code == 1000
    assert record.sent[-1]["type"] == "Metadata"


async def test_phone_stream_forwards_the_mulaw_bytes_as_received_and_re_encodes_only_frames_without_them():
    """A phone call hands each frame over as received too: those bytes go out as they are (no re-encoding on the
    hot path). 0x7F is a μ-law zero that re-encoding turns into 0xFF: seeing it arrive proves the bytes were
    forwarded. A frame without its bytes (the echo canceller changed it) is re-encoded, on the same clock."""
    rng = np.random.default_rng(7)
    quiet = bytes(rng.choice([0x7F, 0xFF, 0x7E, 0xFE, 0x7D, 0xFD], size=160 * 60).astype(np.uint8))  # 1.2 s
    frames = [quiet[i : i + 160] for i in range(0, len(quiet), 160)]
    fake = FakeDeepgram(KEY)
    async with serve_app(fake.app) as origin:
        stream = await stt_engine(origin, phone=True).open_stream(input_rate=8000, call_id="CAraw")
        linear = await stt_engine(origin).open_stream(input_rate=8000, call_id="CAlinear")
        for i, frame in enumerate(frames):
            pcm = ulaw_decode_float(frame)
            stream.feed(pcm, None if i == 30 else frame)
            linear.feed(pcm, frame)  # a linear16 stream has no use for them
            if i % 5 == 4:
                await asyncio.sleep(0.01)
        assert stream._out == len(quiet)  # the call clock counts forwarded bytes as samples
        await stream.aclose()
        await linear.aclose()
    sent, linear_sent = (bytes(r.audio) for r in sorted(fake.listens, key=lambda r: "mulaw" not in r.url))
    expected = quiet[: 30 * 160] + ulaw_encode(ulaw_decode_float(frames[30])) + quiet[31 * 160 :]
    assert sent == expected and b"\x7f" in sent
    assert abs(len(linear_sent) - 4 * len(quiet)) < 0.05 * 4 * len(quiet)  # int16 at 16 kHz, not the μ-law bytes


async def test_linear16_stream_resamples_and_interim_words_come_before_the_final_ones():
    fake = FakeDeepgram(KEY, interim_every=0.4, min_endpoint_silence=30.0)  # finals only on Finalize
    async with serve_app(fake.app) as origin:
        engine = stt_engine(origin, sample_rate=16000)
        stream = await engine.open_stream(input_rate=8000, call_id="CAlin")
        x = caller_audio()
        start, end = speech_span(x)
        await feed(stream, x, speed=1.0)  # real time
        await poll(lambda: len(stream.words(0.0).split()) >= 3, timeout=20)
        interim = stream.words(0.0)
        assert not stream._log.final  # these are interim words
        transcript = await stream.transcript(start, end)
        await stream.aclose()
    q = {k: v[0] for k, v in fake.listens[0].query.items()}
    assert q["encoding"] == "linear16" and q["sample_rate"] == "16000"
    assert len(fake.listens[0].audio) == pytest.approx(len(x) * 4, abs=3200)  # 16 kHz int16
    assert any(m.get("is_final") is False for m in fake.listens[0].sent)
    assert fuzzy_ratio(QUESTION, interim) > 0.3, interim
    assert fuzzy_ratio(QUESTION, transcript.text) > 0.6, transcript.text


async def test_finalize_makes_the_last_words_arrive_at_once():
    """Endpointing off in the fake: without Finalize no final result would ever come. With it, transcript()
    returns as soon as the from_finalize result is in (the fake's Whisper time), not at a timeout."""
    fake = FakeDeepgram(KEY, min_endpoint_silence=30.0)
    async with serve_app(fake.app) as origin:
        engine = stt_engine(origin, phone=True, interim_results=False)
        engine.finalize_timeout = 30.0
        stream = await engine.open_stream(input_rate=8000, call_id="CAfin")
        x = caller_audio()
        await feed(stream, x, speed=8.0)
        await asyncio.sleep(0.3)
        assert stream.words(0.0) == ""  # nothing final yet, and no interim results were asked for
        start, end = speech_span(x)
        t0 = time.monotonic()
        transcript = await stream.transcript(start, end)
        latency = time.monotonic() - t0
        await stream.aclose()
    record = fake.listens[0]
    assert record.controls[0] == "Finalize"
    finals = [m for m in record.sent if m.get("type") == "Results"]
    assert finals and finals[0]["from_finalize"] is True and finals[0]["is_final"] is True
    assert fuzzy_ratio(QUESTION, transcript.text) > 0.6, transcript.text
    assert latency < 10.0
    print(f"finalize → words: {latency * 1000:.0f} ms (the fake's Whisper time)")


async def test_dropped_socket_reconnects_and_the_turns_words_still_arrive():
    fake = FakeDeepgram(KEY)
    fake.drop_listen_after = 1.2  # mid-question
    async with serve_app(fake.app) as origin:
        engine = stt_engine(origin, phone=True)
        stream = await engine.open_stream(input_rate=8000, call_id="CAdrop")
        x = caller_audio()
        await feed(stream, x, speed=2.0)
        await poll(lambda: stream.reconnects == 1)
        start, end = speech_span(x)
        transcript = await stream.transcript(start, end)
        health = engine.health.snapshot()["stt.deepgram"]
        await stream.aclose()
    assert len(fake.listens) == 2 and fake.listens[0].close_code == 1011
    sent = ulaw_encode(x)
    first, second = bytes(fake.listens[0].audio), bytes(fake.listens[1].audio)
    assert sent.startswith(first) and sent[: len(first) + len(second)].endswith(second)
    assert len(second) > len(sent) - len(first) + 800  # the turn's audio before the drop was sent again
    assert fuzzy_ratio(QUESTION, transcript.text) > 0.6, transcript.text
    assert not stream.failed and health["errors_by_kind"].get("disconnected") == 1


async def test_keepalive_keeps_an_idle_socket_open_past_the_idle_timeout():
    fake = FakeDeepgram(KEY, idle_timeout=0.6)
    async with serve_app(fake.app) as origin:
        engine = stt_engine(origin, phone=True)
        engine.keepalive_interval = 0.2
        stream = await engine.open_stream(input_rate=8000, call_id="CAidle")
        await asyncio.sleep(1.8)  # three idle timeouts of silence
        kept = (fake.listens[0].close_code, stream.reconnects, stream.keepalives)
        await stream.aclose()
        # Without KeepAlive the fake closes the socket as Deepgram does (1011 NET-0001) and the stream reconnects.
        engine2 = stt_engine(origin, phone=True)
        engine2.keepalive_interval = 30.0
        lazy = await engine2.open_stream(input_rate=8000, call_id="CAlazy")
        await poll(lambda: lazy.reconnects >= 1, timeout=5)
        await lazy.aclose()
    assert kept[0] is None and kept[1] == 0 and kept[2] >= 3
    assert fake.listens[0].controls.count("KeepAlive") >= 3
    assert fake.listens[1].close_code == 1011


async def test_exhausted_reconnects_mark_the_stream_failed_and_transcript_raises():
    fake = FakeDeepgram(KEY)
    fake.drop_listen_after = 0.5
    async with serve_app(fake.app) as origin:
        engine = stt_engine(origin, phone=True)
        stream = await engine.open_stream(input_rate=8000, call_id="CAfail")
        fake.fail_handshakes.extend([503] * 10)
        await feed(stream, caller_audio()[:8000], speed=8.0)
        await poll(lambda: stream.failed, timeout=10)
        with pytest.raises(ProviderError):
            await stream.transcript(0.0, 1.0)
        t0 = time.monotonic()
        await stream.aclose()
        assert time.monotonic() - t0 < 1.0
    snapshot = engine.health.snapshot()["stt.deepgram"]
    assert snapshot["errors_by_kind"].get("server", 0) == 3 and not snapshot["up"]


async def test_malformed_frame_counts_as_a_protocol_error_and_the_stream_recovers():
    fake = FakeDeepgram(KEY)
    fake.malformed_listen_after = 0.3
    async with serve_app(fake.app) as origin:
        engine = stt_engine(origin, phone=True)
        stream = await engine.open_stream(input_rate=8000, call_id="CAbad")
        x = caller_audio()
        await feed(stream, x, speed=4.0)
        await poll(lambda: stream.reconnects == 1)
        transcript = await stream.transcript(*speech_span(x))
        await stream.aclose()
    assert engine.health.snapshot()["stt.deepgram"]["errors_by_kind"]["protocol"] == 1
    assert fuzzy_ratio(QUESTION, transcript.text) > 0.5, transcript.text


async def test_feed_never_blocks_and_drops_the_oldest_audio_when_the_socket_is_stuck():
    fake = FakeDeepgram(KEY)
    async with serve_app(fake.app) as origin:
        engine = stt_engine(origin, phone=True)
        engine.queue_seconds = 0.5
        stream = await engine.open_stream(input_rate=8000, call_id="CAstuck")
        x = caller_audio()
        t0 = time.perf_counter()
        for i in range(0, len(x), 160):  # no await: the sender cannot run, as if the socket were stuck
            stream.feed(x[i : i + 160])
        elapsed = time.perf_counter() - t0
        assert stream.dropped > 0 and len(stream._queue) <= 6
        await poll(lambda: len(fake.listens[0].audio) >= 4000)
        await stream.aclose()
    frames = len(x) // 160
    assert elapsed / frames < 0.001  # well under a millisecond per 20 ms frame


async def test_credentials_check_401_and_missing_key(monkeypatch):
    fake = FakeDeepgram("the-right-key")
    async with serve_app(fake.app) as origin:
        engine = stt_engine(origin)
        with pytest.raises(ProviderAuthError, match="DEEPGRAM_API_KEY"):
            await engine.check()
        with pytest.raises(ProviderAuthError, match="DEEPGRAM_API_KEY"):  # cached: no second request
            await engine.check()
        assert len(fake.http) == 1 and fake.http[0]["path"] == "/v1/projects"
        with pytest.raises(ProviderAuthError, match="DEEPGRAM_API_KEY"):
            await engine.open_stream(input_rate=8000, call_id="CA401")
        assert engine.health.snapshot()["stt.deepgram"]["errors_by_kind"]["auth"] == 2
        monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
        keyless = dg_stt.create(STT.Deepgram(base_url=origin), make_ctx())  # no crash at create()
        with pytest.raises(ProviderAuthError, match="DEEPGRAM_API_KEY"):
            await keyless.check()
        good = dg_stt.create(STT.Deepgram(api_key="the-right-key", base_url=origin), make_ctx())
        await good.check()
        await good.check()
        assert len(fake.http) == 2  # the success is cached too


async def test_handshake_429_and_rest_5xx_are_retried_then_succeed():
    fake = FakeDeepgram(KEY)
    fake.fail_handshakes.append(429)
    fake.fail_http.append(503)
    async with serve_app(fake.app) as origin:
        engine = stt_engine(origin, phone=True)
        stream = await engine.open_stream(input_rate=8000, call_id="CA429")
        await stream.aclose()
        audio16 = resample(caller_audio(lead=0.1), 8000, 16000)
        transcript = await engine.transcribe(audio16)
    assert len([u for u in fake.urls if "/v1/listen" in u]) == 4  # 429 + ok, 503 + ok
    rest = [r for r in fake.http if r["path"] == "/v1/listen"][-1]
    assert rest["headers"]["content-type"] == "audio/wav" and rest["query"]["model"] == ["nova-2-general"]
    assert fuzzy_ratio(QUESTION, transcript.text) > 0.6, transcript.text


# --- TTS -----------------------------------------------------------------------------------------------------


async def transcribe(pcm: np.ndarray, rate: int) -> str:
    return await speech_backend().transcribe(resample(pcm.astype(np.float32) / 32768.0, rate, 16000))


async def test_tts_session_streams_a_sentence_in_chunks_before_it_is_complete():
    fake = FakeDeepgram(KEY, tts_pace=0.01)
    async with serve_app(fake.app) as origin:
        engine = tts_engine(origin)
        assert engine.sample_rate == 24000
        session = await engine.open_session(call_id="CAtts")
        arrivals, chunks = [], []
        async for chunk in session.stream(SENTENCE, reply_id=1):
            arrivals.append(time.monotonic())
            chunks.append(chunk)
        again = [c async for c in session.stream("Goodbye.", reply_id=2)]  # the same socket, reused
        await session.aclose()
    record = fake.speaks[0]
    assert len(fake.speaks) == 1 and record.headers["authorization"] == "Token ***"
    q = {k: v[0] for k, v in record.query.items()}
    assert q == {"model": "aura-asteria-en", "encoding": "linear16", "sample_rate": "24000"}
    assert [m["type"] for m in record.messages] == ["Speak", "Flush", "Speak", "Flush", "Close"]
    assert record.messages[0]["text"] == SENTENCE
    assert len(chunks) > 10 and arrivals[-1] - arrivals[0] > 0.1  # audio arrived while it was still generating
    pcm = np.concatenate(chunks)
    assert pcm.dtype == np.int16 and again
    assert fuzzy_ratio(SENTENCE, await transcribe(pcm, 24000)) > 0.6


async def test_tts_phone_format_is_mulaw_8k():
    fake = FakeDeepgram(KEY)
    async with serve_app(fake.app) as origin:
        engine = tts_engine(origin, phone=True)
        assert engine.sample_rate == 8000 and engine.encoding == "mulaw"
        session = await engine.open_session(call_id="CAphone")
        pcm = np.concatenate([c async for c in session.stream(SENTENCE, reply_id=1)])
        await session.aclose()
        explicit = tts_engine(origin, phone=True, encoding="linear16", sample_rate=16000)
        assert (explicit.encoding, explicit.sample_rate) == ("linear16", 16000)  # the agent insisted
    q = {k: v[0] for k, v in fake.speaks[0].query.items()}
    assert q["encoding"] == "mulaw" and q["sample_rate"] == "8000"
    assert fuzzy_ratio(SENTENCE, await transcribe(pcm, 8000)) > 0.6


async def test_tts_cancel_sends_clear_and_the_next_sentence_has_no_stale_audio():
    fake = FakeDeepgram(KEY, tts_pace=0.02)
    async with serve_app(fake.app) as origin:
        engine = tts_engine(origin, phone=True)
        session = await engine.open_session(call_id="CAcut")
        gen = session.stream(SENTENCE, reply_id=1)
        got = [await gen.__anext__(), await gen.__anext__()]
        await gen.aclose()  # the caller barged in: playback stops ...
        await session.cancel(1)  # ... and the provider is told
        await poll(lambda: any(m["type"] == "Clear" for m in fake.speaks[0].messages))
        short = np.concatenate([c async for c in session.stream("Okay.", reply_id=2)])
        await session.aclose()
    kinds = [m["type"] for m in fake.speaks[0].messages]
    assert got and kinds == ["Speak", "Flush", "Clear", "Speak", "Flush", "Close"]
    # Exactly the new sentence (well under a second), nothing left over from the cleared one (~4 s of speech).
    assert len(short) < 8000 and "okay" in (await transcribe(short, 8000)).lower()


async def test_tts_respects_the_flush_limit_by_speaking_over_rest():
    fake = FakeDeepgram(KEY)
    async with serve_app(fake.app) as origin:
        engine = tts_engine(origin, phone=True)
        session = await engine.open_session(call_id="CAmany")
        for n in range(21):
            pcm = [c async for c in session.stream("Yes.", reply_id=n)]
            assert pcm, n
        await session.aclose()
    flushes = [m for m in fake.speaks[0].messages if m["type"] == "Flush"]
    assert len(flushes) == 20  # the 21st sentence in a minute went to POST /v1/speak instead
    assert [r["path"] for r in fake.http] == ["/v1/speak"]


async def test_tts_401_names_the_env_var():
    fake = FakeDeepgram("the-right-key")
    async with serve_app(fake.app) as origin:
        engine = tts_engine(origin)
        with pytest.raises(ProviderAuthError, match="DEEPGRAM_API_KEY"):
            await engine.open_session(call_id="CA401")
        with pytest.raises(ProviderAuthError, match="DEEPGRAM_API_KEY"):
            await engine.check()
        with pytest.raises(ProviderAuthError, match="DEEPGRAM_API_KEY"):
            await engine.synthesize("Hello.")
    assert engine.health.snapshot()["tts.deepgram"]["errors_by_kind"]["auth"] == 3


async def test_tts_slow_first_byte_is_retried_then_fails_in_bounded_time():
    # The fake's Piper has run once before the timed retry (the module fixture only loads it), as the other
    # providers' timed tests do: the retry's first byte is timed, and on a busy machine it took longer than 0.4 s.
    await speech_backend().synthesize("Hello there.", 24000)
    fake = FakeDeepgram(KEY)
    async with serve_app(fake.app) as origin:
        engine = tts_engine(origin)
        engine.first_byte_timeout = 1.0
        session = await engine.open_session(call_id="CAslow")
        fake.slow_first_byte, fake.slow_count = 3.0, 1  # slow once: the retry on a fresh socket succeeds
        pcm = [c async for c in session.stream("Hello there.", reply_id=1)]
        assert pcm and len(fake.speaks) == 2
        fake.slow_count = None  # slow every time: the error comes after the retries, in bounded time
        t0 = time.monotonic()
        with pytest.raises(ProviderError, match="timed out"):
            async for _ in session.stream("Hello again.", reply_id=2):
                pass
        assert time.monotonic() - t0 < 3.5  # two attempts of 1.0 s and a short backoff, not two of 3.0
        await session.aclose()
    assert engine.health.snapshot()["tts.deepgram"]["errors_by_kind"]["timeout"] == 1


async def test_tts_mid_stream_disconnect_and_malformed_frames_raise_provider_errors():
    fake = FakeDeepgram(KEY, tts_pace=0.01)
    async with serve_app(fake.app) as origin:
        engine = tts_engine(origin)
        session = await engine.open_session(call_id="CAdrop")
        fake.drop_speak_after_chunks = 3
        got = []
        t0 = time.monotonic()
        with pytest.raises(ProviderError, match="closed"):
            async for chunk in session.stream(SENTENCE, reply_id=1):
                got.append(chunk)
        assert len(got) == 3 and time.monotonic() - t0 < 5.0  # audio already played is not retried
        fake.malformed_speak = True
        with pytest.raises(ProviderError, match="malformed"):
            async for _ in session.stream(SENTENCE, reply_id=2):
                pass
        fake.speak_error = "model overloaded"
        with pytest.raises(ProviderError, match="model overloaded"):
            async for _ in session.stream(SENTENCE, reply_id=3):
                pass
        ok = [c async for c in session.stream("Still here.", reply_id=4)]  # the session reconnects
        await session.aclose()
    assert ok


async def test_tts_rest_synthesize_retries_429_and_decodes_raw_audio():
    fake = FakeDeepgram(KEY)
    fake.fail_http.append(429)
    async with serve_app(fake.app) as origin:
        engine = tts_engine(origin, phone=True)
        pcm = await engine.synthesize(SENTENCE)
    calls = [r for r in fake.http if r["path"] == "/v1/speak"]
    assert len(calls) == 2 and calls[1]["query"]["container"] == ["none"]
    assert calls[1]["query"]["encoding"] == ["mulaw"] and calls[1]["query"]["sample_rate"] == ["8000"]
    assert fuzzy_ratio(SENTENCE, await transcribe(pcm, 8000)) > 0.6


async def test_the_key_never_reaches_logs_urls_or_reprs(caplog):
    fake = FakeDeepgram(KEY)
    fake.drop_listen_after = 0.3
    fake.fail_handshakes.append(429)
    with caplog.at_level(logging.DEBUG):
        async with serve_app(fake.app) as origin:
            stt = stt_engine(origin, phone=True)
            await stt.check()
            stream = await stt.open_stream(input_rate=8000, call_id="CAkey")
            await feed(stream, caller_audio()[:12000], speed=8.0)
            await poll(lambda: stream.reconnects == 1)
            await stream.aclose()
            tts = tts_engine(origin)
            session = await tts.open_session(call_id="CAkey")
            [c async for c in session.stream("Hi.", reply_id=1)]
            await session.aclose()
            errors = []
            bad = tts_engine(origin, key="wrong-" + KEY)
            with pytest.raises(ProviderAuthError) as info:
                await bad.check()
            errors.append(str(info.value))
    assert KEY not in caplog.text and "Token" not in caplog.text
    assert fake.urls and not any(KEY in u for u in fake.urls)
    assert KEY not in repr(stt) + repr(tts) + repr(stt.cfg) + repr(tts.cfg) + "".join(errors)


# --- end to end ----------------------------------------------------------------------------------------------


async def test_a_phone_call_heard_by_deepgram_and_answered_with_aura(auth_token, monkeypatch):
    from pathlib import Path

    from agents.deepgram_agent import GREETING, HOURS
    from conftest import LiveServer, finished_call
    from telebridge.simulator import Say, simulate_call

    fake = FakeDeepgram(KEY)
    monkeypatch.setenv("DEEPGRAM_API_KEY", KEY)
    monkeypatch.setattr(dg_stt.DeepgramSTT, "finalize_timeout", 10.0)  # the fake's Whisper on busy cores
    monkeypatch.setattr(dg_tts.DeepgramTTS, "first_byte_timeout", 20.0)
    async with serve_app(fake.app) as origin:
        server = LiveServer(agent=str(Path(__file__).parent / "agents" / "deepgram_agent.py"),
                            deepgram_base_url=origin, preload_local=False).start()  # as a cloud-only deployment
        try:
            call = await simulate_call(
                server.url, script=[Say(at=None, text="What time do you open tomorrow?", after_agent_quiet=0.8)],
                auth_token=auth_token, duration=40, end_when_quiet=2.0, transcribe=True)
            record = await finished_call(server, call.call_sid)
            leftover = server.call_tasks()
        finally:
            server.stop()
    assert not call.protocol_errors, call.protocol_errors
    users = [m["content"] for m in record.history if m["role"] == "user"]
    assert users and fuzzy_ratio("What time do you open tomorrow?", users[0]) > 0.6, users
    assert record.history[-1] == {"role": "assistant", "content": HOURS}
    greeting, *answer = call.agent_segments
    assert fuzzy_ratio(GREETING, greeting.text) > 0.6, greeting.text
    assert fuzzy_ratio(HOURS, " ".join(s.text for s in answer)) > 0.6, answer
    # Both directions really went through Deepgram: μ-law 8 kHz each way, one socket each for the call.
    assert len(fake.listens) == 1 and fake.listens[0].query["encoding"] == ["mulaw"]
    assert "Finalize" in fake.listens[0].controls and "CloseStream" in fake.listens[0].controls
    assert len(fake.speaks) == 1 and fake.speaks[0].query["encoding"] == ["mulaw"]
    spoken = [m["text"] for m in fake.speaks[0].messages if m["type"] == "Speak"]
    assert spoken[0] == GREETING and HOURS in spoken
    assert not leftover, leftover
