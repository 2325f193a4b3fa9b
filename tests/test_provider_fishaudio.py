"""Fish Audio TTS client (``TTS.FishAudio``) against the fake Fish Audio API over loopback."""

from __future__ import annotations

import asyncio
import logging
import time

import msgpack
import numpy as np
import pytest

from fakes.fishaudio import FakeFishAudio
from fakes.serve import serve_app
from fakes.speech import speech_backend
from speechutil import fuzzy_ratio, resample
from telebridge.config import TTS
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import ProviderAuthError, ProviderError
from telebridge.providers.health import ProviderHealth
from telebridge.providers import registry
from telebridge.settings import Settings

KEY = "fish-key-0123456789SECRET"
SENTENCE = "Thank you for calling the bakery, how can I help you today?"


_ENGINES: list = []


def _track(engine):
    _ENGINES.append(engine)
    return engine


def create_tts(cfg, ctx):
    return _track(registry.create_tts(cfg, ctx))


@pytest.fixture(autouse=True)
async def _close_engines():
    yield
    while _ENGINES:
        await _ENGINES.pop().aclose()


def make_ctx(phone: bool = False, **settings) -> ProviderContext:
    return ProviderContext(Settings(_env_file=None, **settings), None, ProviderHealth(), phone=phone)  # type: ignore[arg-type]


async def heard(pcm: np.ndarray, rate: int) -> str:
    return await speech_backend().transcribe(resample(pcm.astype(np.float32) / 32768.0, rate, 16000))


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture()
async def fake():
    await speech_backend().synthesize("warm up", 24000)  # load Piper/Whisper before timing anything
    fake = FakeFishAudio(api_key=KEY)
    async with serve_app(fake.app) as origin:
        fake.origin = origin
        yield fake


def engine_for(fake: FakeFishAudio, phone: bool = False, **fields):
    ctx = make_ctx(phone)
    engine = create_tts(TTS.FishAudio(base_url=fake.origin, api_key=KEY, **fields), ctx)
    engine.first_byte_timeout = 3.0
    return engine, ctx


async def test_streams_pcm_with_every_field_mapped(fake):
    fake.chunk_bytes = 1201  # odd: samples straddle chunks
    fake.chunk_delay = 0.02
    engine, ctx = engine_for(fake, model_id="abc123voice", latency="normal", normalize=False)
    assert engine.sample_rate == 24000
    await engine.check()
    session = await engine.open_session(call_id="CA1")
    chunks, completed_at_first = [], None
    async for chunk in session.stream(SENTENCE, reply_id=1):
        if completed_at_first is None:
            completed_at_first = fake.completed
        chunks.append(chunk)
    await session.aclose()
    assert completed_at_first == 0 and len(chunks) > 3
    audio = np.concatenate(chunks)
    assert audio.dtype == np.int16 and 1.5 < len(audio) / 24000 < 8
    assert fuzzy_ratio(SENTENCE, await heard(audio, 24000)) > 0.7
    check, req = fake.requests
    assert check["path"] == "/wallet/self/api-credit" and check["method"] == "GET"
    assert req["path"] == "/v1/tts" and req["query"] == {}
    assert req["headers"]["content-type"] == "application/msgpack"
    assert req["headers"]["model"] == "s2-pro"
    assert req["body"] == {"text": SENTENCE, "reference_id": "abc123voice", "format": "pcm", "sample_rate": 24000,
                           "latency": "normal", "normalize": False, "chunk_length": 200}
    assert ctx.health.snapshot()["tts.fishaudio"]["ok"] >= 2


async def test_phone_calls_ask_for_8k_pcm(fake):
    engine, _ = engine_for(fake, phone=True)
    assert engine.sample_rate == 8000
    pcm = await engine.synthesize("Hello from the phone line.")
    assert len(pcm) > 8000 * 0.8
    body = fake.tts_requests[0]["body"]
    assert body["sample_rate"] == 8000 and body["format"] == "pcm"
    assert body["reference_id"] == "802e3bc2b27e49c2995d23ef70e6ac89" and body["latency"] == "balanced"
    assert body["normalize"] is True
    assert fuzzy_ratio("Hello from the phone line.", await heard(pcm, 8000)) > 0.6


async def test_settings_base_url_is_used():
    ctx = make_ctx(fishaudio_base_url="http://127.0.0.1:9")
    assert create_tts(TTS.FishAudio(api_key=KEY), ctx).origin == "http://127.0.0.1:9"
    assert create_tts(TTS.FishAudio(api_key=KEY), make_ctx()).origin == "https://api.fish.audio"


async def test_cancel_reaches_the_provider(fake):
    fake.chunk_bytes = 800
    fake.chunk_delay = 0.05
    engine, _ = engine_for(fake)
    session = await engine.open_session(call_id="CA2")
    got = 0
    async for _chunk in session.stream(SENTENCE, reply_id=3):
        got += 1
        if got == 2:
            await session.cancel(3)
    assert got <= 3
    await wait_for(lambda: fake.disconnects == 1)
    assert fake.completed == 0
    await session.aclose()


async def test_401_is_an_auth_error_naming_the_env_var(fake):
    engine = create_tts(TTS.FishAudio(base_url=fake.origin, api_key="wrong-key-42"), make_ctx())
    with pytest.raises(ProviderAuthError, match="FISHAUDIO_API_KEY"):
        await engine.check()
    with pytest.raises(ProviderAuthError, match="FISHAUDIO_API_KEY"):
        await engine.synthesize("Hello.")
    assert len(fake.tts_requests) == 1
    with pytest.raises(ProviderAuthError):
        await engine.check()  # cached
    assert len(fake.requests) == 2


async def test_missing_key_fails_at_check_not_create(fake, monkeypatch):
    monkeypatch.delenv("FISHAUDIO_API_KEY", raising=False)
    engine = create_tts(TTS.FishAudio(base_url=fake.origin), make_ctx())
    with pytest.raises(ProviderAuthError, match="FISHAUDIO_API_KEY"):
        await engine.check()
    assert fake.requests == []


@pytest.mark.parametrize("fault", [429, 500, "slow_first_byte"])
async def test_retried_before_the_first_byte(fake, fault):
    fake.faults = [fault]
    engine, _ = engine_for(fake)
    if fault == "slow_first_byte":
        fake.slow_first_byte = 6.0
        engine.first_byte_timeout = 2.0  # the fake answers after 6 s; the retry's first byte comes at once
    assert len(await engine.synthesize("Retry me.")) > 0
    assert len(fake.tts_requests) == 2


async def test_402_is_not_retried(fake):
    fake.faults = [402]
    engine, ctx = engine_for(fake)
    with pytest.raises(ProviderError, match="402"):
        await engine.synthesize("No credit.")
    assert len(fake.tts_requests) == 1


async def test_slow_first_byte_every_time_fails_in_bounded_time(fake):
    fake.faults = ["slow_first_byte"] * 3
    engine, ctx = engine_for(fake)
    engine.first_byte_timeout = 0.3
    started = time.monotonic()
    with pytest.raises(ProviderError, match="timed out"):
        await engine.synthesize("Too slow.")
    assert time.monotonic() - started < 6 and len(fake.tts_requests) == 3
    assert ctx.health.snapshot()["tts.fishaudio"]["errors_by_kind"] == {"timeout": 1}


async def test_mid_stream_disconnect_is_an_error_not_a_hang(fake):
    fake.faults = ["disconnect"]
    engine, ctx = engine_for(fake)
    session = await engine.open_session(call_id="CA3")
    got = []
    started = time.monotonic()
    with pytest.raises(ProviderError, match="connection lost"):
        async for chunk in session.stream(SENTENCE, reply_id=1):
            got.append(chunk)
    assert got and time.monotonic() - started < 5
    assert len(fake.tts_requests) == 1
    assert ctx.health.snapshot()["tts.fishaudio"]["errors_by_kind"] == {"disconnected": 1}
    await session.aclose()


async def test_malformed_response_is_a_protocol_error(fake):
    fake.faults = ["malformed"]
    engine, _ = engine_for(fake)
    with pytest.raises(ProviderError, match="malformed"):
        await engine.synthesize("Hello.")


async def test_key_never_logged_nor_in_urls(fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.faults = [429, "disconnect"]
    engine, _ = engine_for(fake)
    await engine.check()
    with pytest.raises(ProviderError) as info:
        await engine.synthesize("Hello there, this is a longer sentence to cut.")
    assert KEY not in caplog.text and KEY not in str(info.value) and KEY not in repr(engine)
    for req in fake.requests:
        assert KEY not in req["url"] and KEY not in str(req["headers"])
    assert "429" in caplog.text


def test_request_body_is_documented_msgpack():
    engine = create_tts(TTS.FishAudio(api_key=KEY), make_ctx())
    body = engine.request_body("Hi.")
    assert msgpack.unpackb(msgpack.packb(body)) == body
    assert set(body) <= {"text", "reference_id", "format", "sample_rate", "latency", "normalize", "chunk_length"}
