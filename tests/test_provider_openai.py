"""OpenAI speech clients (``STT.OpenAI``, ``TTS.OpenAI``) against the fake OpenAI server over loopback."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from fakes.openai_server import FakeOpenAI, run_fake_openai
from fakes.speech import speech_backend
from speechutil import fuzzy_ratio, resample, synth
from telebridge.config import STT, TTS
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import ProviderAuthError, ProviderError
from telebridge.providers.health import ProviderHealth
from telebridge.providers import registry
from telebridge.providers.stt.openai import sdk_base_url
from telebridge.settings import Settings

KEY = "sk-test-0123456789abcdefSECRET"
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


_ENGINES: list = []


def _track(engine):
    _ENGINES.append(engine)
    return engine


def create_tts(cfg, ctx):
    return _track(registry.create_tts(cfg, ctx))


def create_stt(cfg, ctx):
    return _track(registry.create_stt(cfg, ctx))


@pytest.fixture(autouse=True)
async def _close_engines():
    yield
    while _ENGINES:
        await _ENGINES.pop().aclose()


def make_ctx(phone: bool = False) -> ProviderContext:
    return ProviderContext(Settings(_env_file=None), None, ProviderHealth(), phone=phone)  # type: ignore[arg-type]


async def heard(pcm: np.ndarray, rate: int) -> str:
    x = pcm.astype(np.float32) / 32768.0
    return await speech_backend().transcribe(resample(x, rate, 16000))


def speech_requests(fake: FakeOpenAI) -> list[dict]:
    return [r for r in fake.audio_requests if r["path"] == "/v1/audio/speech"]


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture()
async def fake_origin():
    await speech_backend().synthesize("warm up", 24000)  # load Piper/Whisper before timing anything
    fake = FakeOpenAI(api_key=KEY)
    async with run_fake_openai(fake) as base_url:
        yield fake, base_url.removesuffix("/v1")


def tts(origin: str, phone: bool = False, **fields):
    cfg = TTS.OpenAI(base_url=origin, api_key=KEY, **fields)
    ctx = make_ctx(phone)
    engine = create_tts(cfg, ctx)
    engine.first_byte_timeout = 3.0
    return engine, ctx


# --- endpoint ---------------------------------------------------------------------------------------------------
def test_sdk_base_url_from_origin_or_openai_base_url(monkeypatch):
    assert sdk_base_url("https://api.openai.com") == "https://api.openai.com/v1"
    assert sdk_base_url("http://127.0.0.1:9/v1") == "http://127.0.0.1:9/v1"
    assert sdk_base_url("http://127.0.0.1:9/v1/") == "http://127.0.0.1:9/v1"
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert create_tts(TTS.OpenAI(api_key=KEY), make_ctx()).access.base_url == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://proxy.local:8080/v1")
    assert create_stt(STT.OpenAI(api_key=KEY), make_ctx()).access.base_url == "http://proxy.local:8080/v1"
    explicit = create_tts(TTS.OpenAI(api_key=KEY, base_url="http://other:1"), make_ctx())
    assert explicit.access.base_url == "http://other:1/v1"


async def test_env_base_url_reaches_the_fake(monkeypatch):
    fake = FakeOpenAI(api_key=KEY)
    async with run_fake_openai(fake) as base_url:
        monkeypatch.setenv("OPENAI_BASE_URL", base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        engine = create_tts(TTS.OpenAI(), make_ctx())
        await engine.check()
    assert [r["path"] for r in fake.audio_requests] == ["/v1/models"]


# --- TTS --------------------------------------------------------------------------------------------------------
async def test_speech_streams_pcm_chunks_as_they_arrive(fake_origin):
    fake, origin = fake_origin
    fake.speech_chunk_bytes = 4801  # odd: samples straddle chunks
    fake.speech_chunk_delay = 0.02
    engine, ctx = tts(origin, model="tts-1-hd", voice="nova", speed=1.25)
    assert engine.sample_rate == 24000
    session = await engine.open_session(call_id="CA1")
    chunks, completed_at_first = [], None
    async for chunk in session.stream(SENTENCE, reply_id=1):
        if completed_at_first is None:
            completed_at_first = fake.speech_completed
        assert chunk.dtype == np.int16
        chunks.append(chunk)
    await session.aclose()
    assert completed_at_first == 0, "the first chunk came only after the whole sentence"
    assert len(chunks) > 3
    audio = np.concatenate(chunks)
    assert 1.5 < len(audio) / 24000 < 8
    assert fuzzy_ratio(SENTENCE, await heard(audio, 24000)) > 0.7
    (req,) = speech_requests(fake)
    assert req["body"] == {"model": "tts-1-hd", "voice": "nova", "input": SENTENCE, "response_format": "pcm",
                           "speed": 1.25}
    assert req["authorized"] and req["query"] == {} and KEY not in req["url"]
    assert req["headers"]["content-type"].startswith("application/json")
    assert ctx.health.snapshot()["tts.openai"]["ok"] >= 1


async def test_phone_calls_get_24k_pcm_and_synthesize_whole(fake_origin):
    fake, origin = fake_origin
    engine, _ = tts(origin, phone=True)
    assert engine.sample_rate == 24000  # OpenAI has no μ-law; telebridge resamples
    pcm = await engine.synthesize("Hello from the phone.")
    assert pcm.dtype == np.int16 and len(pcm) > 24000 * 0.5
    assert speech_requests(fake)[0]["body"]["response_format"] == "pcm"
    assert len(await engine.synthesize("   ")) == 0
    assert len(speech_requests(fake)) == 1


async def test_cancel_closes_the_response_at_the_provider(fake_origin):
    fake, origin = fake_origin
    fake.speech_chunk_bytes = 2400
    fake.speech_chunk_delay = 0.05
    engine, _ = tts(origin)
    session = await engine.open_session(call_id="CA2")
    got = 0
    started = time.monotonic()
    async for _chunk in session.stream(SENTENCE + " " + SENTENCE, reply_id=7):
        got += 1
        if got == 2:
            await session.cancel(7)
    assert got <= 3 and time.monotonic() - started < 5
    await wait_for(lambda: fake.speech_disconnects == 1)
    assert fake.speech_completed == 0
    # A cancelled reply says nothing more; the next reply speaks.
    assert [c async for c in session.stream("More words.", reply_id=7)] == []
    assert [c async for c in session.stream("Next reply.", reply_id=8)]
    await session.aclose()


async def test_consumer_walking_away_closes_the_response(fake_origin):
    fake, origin = fake_origin
    fake.speech_chunk_delay = 0.05
    engine, _ = tts(origin)
    session = await engine.open_session(call_id="CA3")
    stream = session.stream(SENTENCE, reply_id=1)
    await stream.__anext__()
    await stream.aclose()
    await wait_for(lambda: fake.speech_disconnects == 1)
    await session.aclose()


async def test_401_is_an_auth_error_naming_the_env_var(fake_origin):
    fake, origin = fake_origin
    engine = create_tts(TTS.OpenAI(base_url=origin, api_key="sk-wrong-key-000000000"), make_ctx())
    with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
        await engine.check()
    with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
        await engine.synthesize("Hello.")
    assert len(speech_requests(fake)) == 1  # not retried
    with pytest.raises(ProviderAuthError):  # the failed check is cached
        await engine.check()
    assert len([r for r in fake.audio_requests if r["path"] == "/v1/models"]) == 1


async def test_check_is_cached_and_missing_key_fails_at_check(fake_origin, monkeypatch):
    fake, origin = fake_origin
    engine, ctx = tts(origin)
    await engine.check()
    await engine.check()
    assert len(fake.audio_requests) == 1
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    keyless = create_tts(TTS.OpenAI(base_url=origin), make_ctx())  # no crash at create()
    with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
        await keyless.check()
    with pytest.raises(ProviderAuthError):
        await keyless.open_session(call_id="CA4")


@pytest.mark.parametrize("fault", [429, 500, "slow_first_byte"])
async def test_retried_before_the_first_byte(fake_origin, fault):
    fake, origin = fake_origin
    fake.speech_faults = [fault]
    engine, _ = tts(origin)
    if fault == "slow_first_byte":
        fake.slow_first_byte = 6.0
        engine.first_byte_timeout = 2.0  # the fake answers after 6 s; the retry's first byte comes at once
    pcm = await engine.synthesize("Retry me.")
    assert len(pcm) > 0
    assert len(speech_requests(fake)) == 2


async def test_slow_first_byte_every_time_fails_in_bounded_time(fake_origin):
    fake, origin = fake_origin
    fake.speech_faults = ["slow_first_byte"] * 3
    engine, ctx = tts(origin)
    engine.first_byte_timeout = 0.3
    started = time.monotonic()
    with pytest.raises(ProviderError, match="timed out"):
        await engine.synthesize("Too slow.")
    assert time.monotonic() - started < 6
    assert len(speech_requests(fake)) == 3
    assert ctx.health.snapshot()["tts.openai"]["errors_by_kind"].get("timeout") == 1


async def test_mid_stream_disconnect_is_an_error_not_a_hang(fake_origin):
    fake, origin = fake_origin
    fake.speech_faults = ["disconnect"]
    engine, ctx = tts(origin)
    session = await engine.open_session(call_id="CA5")
    got = []
    started = time.monotonic()
    with pytest.raises(ProviderError, match="connection lost"):
        async for chunk in session.stream(SENTENCE, reply_id=1):
            got.append(chunk)
    assert got, "audio before the cut was delivered"
    assert time.monotonic() - started < 5
    assert len(speech_requests(fake)) == 1  # audio had started: never retried
    assert ctx.health.snapshot()["tts.openai"]["errors_by_kind"] == {"disconnected": 1}
    await session.aclose()


async def test_malformed_response_is_a_protocol_error(fake_origin):
    fake, origin = fake_origin
    fake.speech_faults = ["malformed"]
    engine, _ = tts(origin)
    with pytest.raises(ProviderError, match="malformed"):
        await engine.synthesize("Hello.")
    assert len(speech_requests(fake)) == 1


async def test_key_never_logged_nor_in_urls_or_errors(fake_origin, caplog):
    fake, origin = fake_origin
    fake.speech_faults = [429, "disconnect"]
    caplog.set_level(logging.DEBUG)
    engine, _ = tts(origin)
    await engine.check()
    with pytest.raises(ProviderError) as info:
        await engine.synthesize("Hello there.")
    stt = create_stt(STT.OpenAI(base_url=origin, api_key=KEY), make_ctx())
    await stt.transcribe(np.zeros(1600, dtype=np.float32))
    assert KEY not in caplog.text
    assert KEY not in str(info.value) and KEY not in repr(engine) and KEY not in repr(stt)
    for req in fake.audio_requests:
        assert KEY not in req["url"] and KEY not in str(req["headers"])
    assert "/v1/audio/speech" in caplog.text  # the SDK's and httpx's request logs were captured


async def test_fake_speaks_the_other_formats_too(fake_origin):
    import io

    import av
    from openai import AsyncOpenAI

    fake, origin = fake_origin
    client = AsyncOpenAI(api_key=KEY, base_url=origin + "/v1", max_retries=0)
    for fmt in ("wav", "mp3"):
        audio = await client.audio.speech.create(model="tts-1", voice="alloy", input="Hi there.",
                                                 response_format=fmt)
        with av.open(io.BytesIO(audio.content)) as container:
            stream = container.streams.audio[0]
            samples = sum(frame.samples for frame in container.decode(stream))
            assert stream.rate == 24000 and samples > 24000 * 0.3
    await client.close()


# --- STT --------------------------------------------------------------------------------------------------------
async def test_whisper_1_transcribes_with_verbose_json(fake_origin):
    fake, origin = fake_origin
    ctx = make_ctx(phone=True)
    engine = create_stt(STT.OpenAI(base_url=origin, api_key=KEY, language="en-US"), ctx)
    await engine.check()
    audio = resample(synth("Please book a table for two at seven tonight.", 22050), 22050, 16000)
    result = await engine.transcribe(audio)
    assert fuzzy_ratio("Please book a table for two at seven tonight.", result.text) > 0.7
    assert result.avg_logprob is not None and result.no_speech_prob is not None
    assert result.language == "en" and result.duration == pytest.approx(len(audio) / 16000, abs=0.01)
    req = [r for r in fake.audio_requests if r["path"] == "/v1/audio/transcriptions"][0]
    assert req["body"]["model"] == "whisper-1" and req["body"]["language"] == "en"
    assert req["body"]["response_format"] == "verbose_json"
    assert req["body"]["file"]["sample_rate"] == 16000 and req["body"]["file"]["content_type"] == "audio/wav"
    assert req["headers"]["content-type"].startswith("multipart/form-data")
    assert ctx.health.snapshot()["stt.openai"]["ok"] >= 1


@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "gpt-4o-mini-transcribe"])
async def test_gpt4o_transcribers_use_json(fake_origin, model):
    fake, origin = fake_origin
    fake.transcription_faults = [429]
    engine = create_stt(STT.OpenAI(base_url=origin, api_key=KEY, model=model), make_ctx())
    audio = resample(synth("Good morning.", 22050), 22050, 16000)
    result = await engine.transcribe(audio)
    assert "morning" in result.text.lower()
    assert result.avg_logprob is None
    reqs = [r for r in fake.audio_requests if r["path"] == "/v1/audio/transcriptions"]
    assert len(reqs) == 2  # 429, then retried
    assert reqs[-1]["body"]["response_format"] == "json" and reqs[-1]["body"]["model"] == model


async def test_stt_401_and_empty_audio(fake_origin):
    fake, origin = fake_origin
    engine = create_stt(STT.OpenAI(base_url=origin, api_key="sk-not-the-right-one-123"), make_ctx())
    assert (await engine.transcribe(np.zeros(0, dtype=np.float32))).text == ""
    with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
        await engine.transcribe(np.zeros(8000, dtype=np.float32))
    assert len(fake.audio_requests) == 1


# --- one phone call through the real server ---------------------------------------------------------------------
async def test_phone_call_with_openai_speech_both_ways(auth_token, monkeypatch):
    from pathlib import Path

    from agents.openai_speech_agent import ANSWER, GREETING
    from conftest import LiveServer, finished_call
    from telebridge.simulator import Say, simulate_call

    key = "sk-agent-key-0123456789abcdef"
    fake = FakeOpenAI(api_key=key)
    async with run_fake_openai(fake) as base_url:
        monkeypatch.setenv("OPENAI_BASE_URL", base_url)
        monkeypatch.setenv("OPENAI_API_KEY", key)
        srv = LiveServer(agent=str(Path(__file__).parent / "agents" / "openai_speech_agent.py")).start()
        try:
            call = await simulate_call(srv.url, script=[Say(at=None, text="Do you deliver roses?",
                                                            after_agent_quiet=0.6)],
                                       auth_token=auth_token, duration=25, end_when_quiet=1.5, transcribe=True)
            await finished_call(srv, call.call_sid)
            health = srv.runtime.provider_health.snapshot()
        finally:
            # The runtime keeps engines for the process's life; close the SDK clients on the server's own loop
            # so they are not garbage-collected after it closed.
            engines = [e for e in getattr(srv.runtime, "_engines", {}).values() if hasattr(e, "access")]
            for engine in engines:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(engine.aclose(), srv.loop))
            srv.stop()
    said = [seg.text for seg in call.agent_segments]
    # A loaded machine may split the greeting at a sentence gap: compare what was heard as a whole.
    assert fuzzy_ratio(f"{GREETING} {ANSWER}", " ".join(said)) > 0.7, said
    paths = [r["path"] for r in fake.audio_requests]
    assert "/v1/audio/transcriptions" in paths and paths.count("/v1/audio/speech") >= 2
    assert health["tts.openai"]["fallbacks"] == 0 and health["stt.openai"]["fallbacks"] == 0, health
    speech = [r["body"] for r in fake.audio_requests if r["path"] == "/v1/audio/speech"]
    assert {(b["voice"], b["speed"], b["response_format"]) for b in speech} == {("nova", 1.1, "pcm")}
