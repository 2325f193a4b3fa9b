"""Azure Speech STT (REST API for short audio) and TTS (REST, streamed) against a fake speaking Azure's wire
protocol over loopback, with real Whisper/Piper speech behind it."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import LiveServer, finished_call
from fakes.azure_speech import FakeAzureSpeech, Fault
from fakes.serve import ThreadedApp, serve_app
from fakes.speech import speech_backend
from speechutil import fuzzy_ratio, leading_text
from telebridge.audio.resample import resample_once
from telebridge.config import STT, TTS
from telebridge.providers.azure_common import AzureEndpoints
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import ProviderAuthError, ProviderConfigError, ProviderError
from telebridge.providers.health import ProviderHealth
from telebridge.providers.retry import RetryPolicy
from telebridge.providers.stt import azure as stt_azure
from telebridge.providers.tts import azure as tts_azure
from telebridge.settings import Settings

KEY = "azk-SECRET-7d41e0c9b2aa"
QUESTION = "What time do you open tomorrow morning?"
SENTENCE = "Thank you for calling, our shop is open until six tonight."
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)


@pytest.fixture(scope="module", autouse=True)
def _warm_models():
    speech_backend()._models()  # load Whisper/Piper once, so no request pays for it


@pytest.fixture(autouse=True)
def _no_ambient_azure(monkeypatch):
    monkeypatch.delenv("AZURE_API_KEY", raising=False)
    monkeypatch.delenv("AZURE_REGION", raising=False)
    monkeypatch.delenv("TELEBRIDGE_AZURE_SPEECH_BASE_URL", raising=False)


@pytest.fixture()
async def azure():
    fake = FakeAzureSpeech(key=KEY)
    async with serve_app(fake.app) as origin:
        yield fake, origin


def context(*, phone: bool = False, health: ProviderHealth | None = None, **settings) -> ProviderContext:
    return ProviderContext(Settings(_env_file=None, **settings), None, health or ProviderHealth(), phone=phone)


def fast(engine, first_byte: float = 20.0):
    engine.client.retry_policy = FAST
    engine.client.first_byte_timeout = first_byte
    return engine


def make_stt(origin: str, ctx: ProviderContext | None = None, **fields) -> stt_azure.AzureSTT:
    fields.setdefault("api_key", KEY)
    return fast(stt_azure.create(STT.Azure(base_url=origin, **fields), ctx or context()))


def make_tts(origin: str, ctx: ProviderContext | None = None, **fields) -> tts_azure.AzureTTS:
    fields.setdefault("api_key", KEY)
    return fast(tts_azure.create(TTS.Azure(base_url=origin, **fields), ctx or context()))


async def speech16k(text: str) -> np.ndarray:
    return (await speech_backend().synthesize(text, 16000)).astype(np.float32) / 32768.0


async def heard(pcm: np.ndarray, rate: int) -> str:
    x = pcm.astype(np.float32) / 32768.0
    return await speech_backend().transcribe(x if rate == 16000 else resample_once(x, rate, 16000))


async def eventually(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- endpoints, region, credentials ---------------------------------------------------------------------------
def test_public_endpoints_follow_the_region():
    ep = AzureEndpoints("westeurope", None)
    assert ep.stt == "https://westeurope.stt.speech.microsoft.com"
    assert ep.tts == "https://westeurope.tts.speech.microsoft.com"
    assert ep.custom_voice == "https://westeurope.voice.speech.microsoft.com"
    assert ep.token == "https://westeurope.api.cognitive.microsoft.com"
    assert stt_azure.recognition_url(ep.stt, "en-US") == (
        "https://westeurope.stt.speech.microsoft.com/speech/recognition/conversation/cognitiveservices/v1"
        "?language=en-US&format=detailed")
    tts = tts_azure.create(TTS.Azure(api_key=KEY, region="eastus"), context())
    assert tts.url() == "https://eastus.tts.speech.microsoft.com/cognitiveservices/v1"
    custom = tts_azure.create(TTS.Azure(api_key=KEY, region="eastus", voice="MyBrandNeural", endpoint_id="e-12"),
                              context())
    assert custom.url() == "https://eastus.voice.speech.microsoft.com/cognitiveservices/v1?deploymentId=e-12"


def test_region_comes_from_the_environment_and_base_url_replaces_every_origin(monkeypatch):
    monkeypatch.setenv("AZURE_REGION", "northeurope")
    stt = stt_azure.create(STT.Azure(api_key=KEY), context())
    assert stt.client.endpoints.stt == "https://northeurope.stt.speech.microsoft.com"
    # The service-wide setting replaces all of them; a config's own base_url wins over it.
    ctx = context(azure_speech_base_url="http://127.0.0.1:9")
    tts = tts_azure.create(TTS.Azure(api_key=KEY), ctx)
    ep = tts.client.endpoints
    assert ep.stt == ep.tts == ep.token == ep.custom_voice == "http://127.0.0.1:9"
    own = tts_azure.create(TTS.Azure(api_key=KEY, base_url="http://127.0.0.1:10/"), ctx)
    assert own.url() == "http://127.0.0.1:10/cognitiveservices/v1"


async def test_missing_region_is_a_config_error_at_check_naming_the_variable():
    stt = stt_azure.create(STT.Azure(api_key=KEY), context())  # no crash at create()
    with pytest.raises(ProviderConfigError, match="AZURE_REGION"):
        await stt.check()
    with pytest.raises(ProviderConfigError, match="AZURE_REGION"):
        await stt.transcribe(np.zeros(1600, np.float32))
    tts = tts_azure.create(TTS.Azure(api_key=KEY), context())
    with pytest.raises(ProviderConfigError, match="AZURE_REGION"):
        await tts.check()


async def test_missing_key_is_an_auth_error_at_check(azure):
    fake, origin = azure
    health = ProviderHealth()
    for engine in (stt_azure.create(STT.Azure(base_url=origin), context(health=health)),
                   tts_azure.create(TTS.Azure(base_url=origin), context(health=health))):
        with pytest.raises(ProviderAuthError, match="AZURE_API_KEY"):
            await engine.check()
    assert fake.requests == []
    assert health.snapshot()["stt.azure"]["errors_by_kind"] == {"auth": 1}


async def test_check_asks_issue_token_once_and_caches(azure):
    fake, origin = azure
    stt = make_stt(origin)
    await stt.check()
    await stt.check()
    assert fake.count("token") == 1
    req = fake.requests[0]
    assert (req["method"], req["path"], req["auth"]) == ("POST", "/sts/v1.0/issueToken", "key")
    blip = make_tts(origin)
    fake.fail("token", "503")
    await blip.check()  # a 5xx on the check is retried, not taken as a verdict on the key
    assert fake.count("token") == 3
    bad = make_stt(origin, api_key="wrong-key")
    for _ in range(2):
        with pytest.raises(ProviderAuthError, match="AZURE_API_KEY"):
            await bad.check()
    assert fake.count("token") == 4  # the refusal is remembered too (30 s)


# --- speech to text -------------------------------------------------------------------------------------------
async def test_stt_request_shape_and_transcript(azure):
    fake, origin = azure
    health = ProviderHealth()
    stt = make_stt(origin, context(health=health))
    transcript = await stt.transcribe(await speech16k(QUESTION))
    assert fuzzy_ratio(QUESTION, transcript.text) > 0.7, transcript
    assert transcript.language == "en-US" and transcript.duration > 1.0
    req = fake.requests[-1]
    assert req["path"] == "/speech/recognition/conversation/cognitiveservices/v1"
    assert req["query"] == {"language": "en-US", "format": "detailed"}
    assert req["headers"]["content-type"] == "audio/wav; codecs=audio/pcm; samplerate=16000"
    assert req["headers"]["accept"] == "application/json"
    assert req["headers"]["user-agent"].startswith("telebridge/")
    assert req["auth"] == "key"
    assert fake.wavs[-1]["rate"] == 16000 and fake.wavs[-1]["channels"] == 1
    assert health.snapshot()["stt.azure"]["ok"] == 1


async def test_stt_languages_sample_rate_and_channels(azure):
    fake, origin = azure
    stt = make_stt(origin, languages=["es-MX", "en-US"], sample_rate=8000, num_channels=2)
    transcript = await stt.transcribe(await speech16k(QUESTION), language="en")
    assert fuzzy_ratio(QUESTION, transcript.text) > 0.6, transcript
    req = fake.requests[-1]
    assert req["query"]["language"] == "en-US" and transcript.language == "en-US"
    assert req["headers"]["content-type"] == "audio/wav; codecs=audio/pcm; samplerate=8000"
    assert fake.wavs[-1]["rate"] == 8000 and fake.wavs[-1]["channels"] == 2
    fake.fail("stt", "status:NoMatch")
    await stt.transcribe(np.zeros(1600, np.float32))
    assert fake.requests[-1]["query"]["language"] == "es-MX"  # no language asked: the first configured


def test_language_choice():
    assert stt_azure.pick_language(["de-DE", "en-GB"]) == "de-DE"
    assert stt_azure.pick_language(["de-DE", "en-GB"], "en") == "en-GB"
    assert stt_azure.pick_language(["de-DE", "en-GB"], "EN-gb") == "en-GB"
    assert stt_azure.pick_language(["de-DE"], "fr-FR") == "fr-FR"
    assert stt_azure.pick_language(["de-DE"], "fr") == "de-DE"


@pytest.mark.parametrize("status", ["NoMatch", "InitialSilenceTimeout", "BabbleTimeout"])
async def test_stt_statuses_without_words_are_empty(azure, status):
    fake, origin = azure
    fake.fail("stt", f"status:{status}")
    transcript = await make_stt(origin).transcribe(np.zeros(8000, np.float32))
    assert transcript.is_empty and fake.count("stt") == 1


def test_result_parsing_simple_and_detailed():
    simple = b'{"RecognitionStatus":"Success","DisplayText":"Remind me to buy 5 pencils.","Offset":1,"Duration":2}'
    assert stt_azure.parse_result(simple, language="en-US", duration=1.0).text == "Remind me to buy 5 pencils."
    detailed = (b'{"RecognitionStatus":"Success","NBest":[{"Confidence":0.9,"Display":"What\'s the weather like?",'
                b'"Lexical":"what\'s the weather like"},{"Display":"what is the weather like"}]}')
    assert stt_azure.parse_result(detailed, language="en-US", duration=1.0).text == "What's the weather like?"
    with pytest.raises(ProviderError):
        stt_azure.parse_result(b'{"NBest": []}', language="en-US", duration=1.0)


async def test_stt_error_status_and_server_errors_are_retried(azure):
    fake, origin = azure
    fake.fail("stt", "status:Error", Fault("429", retry_after=0.05), "503")
    stt = make_stt(origin)
    stt.client.retry_policy = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.02)
    transcript = await stt.transcribe(await speech16k(QUESTION))
    assert fuzzy_ratio(QUESTION, transcript.text) > 0.7
    assert fake.count("stt") == 4


async def test_stt_malformed_json_fails_fast(azure):
    fake, origin = azure
    health = ProviderHealth()
    fake.fail("stt", "malformed")
    with pytest.raises(ProviderError, match="malformed"):
        await make_stt(origin, context(health=health)).transcribe(np.ones(1600, np.float32) * 0.1)
    assert fake.count("stt") == 1
    assert health.snapshot()["stt.azure"]["errors_by_kind"] == {"protocol": 1}


async def test_stt_401_names_the_variable(azure):
    fake, origin = azure
    with pytest.raises(ProviderAuthError, match="AZURE_API_KEY"):
        await make_stt(origin, api_key="not-the-key").transcribe(np.zeros(1600, np.float32))
    assert fake.count("stt") == 1  # a refused key is not retried


async def test_stt_slow_answer_times_out_after_retries(azure):
    fake, origin = azure
    fake.fail("stt", *[Fault("slow", delay=1.0)] * 3)
    stt = make_stt(origin)
    stt.response_timeout = 0.2
    started = time.monotonic()
    with pytest.raises(ProviderError, match="in time"):
        await stt.transcribe(np.zeros(1600, np.float32))
    assert time.monotonic() - started < 2.5
    assert fake.count("stt") == 3


# --- text to speech -------------------------------------------------------------------------------------------
async def test_tts_request_shape_default_voice_and_real_audio(azure):
    fake, origin = azure
    tts = make_tts(origin)
    pcm = await tts.synthesize(SENTENCE)
    assert tts.sample_rate == 24000 and pcm.dtype == np.int16
    assert fuzzy_ratio(SENTENCE, await heard(pcm, 24000)) > 0.7
    req = fake.requests[-1]
    assert (req["method"], req["path"], req["query"]) == ("POST", "/cognitiveservices/v1", {})
    assert req["headers"]["content-type"] == "application/ssml+xml"
    assert req["headers"]["x-microsoft-outputformat"] == "raw-24khz-16bit-mono-pcm"
    assert req["headers"]["user-agent"].startswith("telebridge/") and req["auth"] == "key"
    ssml = fake.ssml[-1]
    assert (ssml["voice"], ssml["lang"], ssml["prosody"], ssml["text"]) == (
        "en-US-JennyNeural", "en-US", None, SENTENCE)


async def test_tts_fields_map_to_ssml(azure):
    fake, origin = azure
    await make_tts(origin, voice="de-DE-KatjaNeural").synthesize("Guten Tag.")
    assert (fake.ssml[-1]["voice"], fake.ssml[-1]["lang"]) == ("de-DE-KatjaNeural", "de-DE")
    await make_tts(origin, language="en-GB").synthesize("Good day.")
    assert (fake.ssml[-1]["voice"], fake.ssml[-1]["lang"]) == ("en-GB-SoniaNeural", "en-GB")
    prosody = TTS.ProsodyConfig(rate=0.75, volume=40.0, pitch="low")
    await make_tts(origin, prosody=prosody, sample_rate=16000).synthesize("Slowly now.")
    assert fake.ssml[-1]["prosody"] == {"rate": "0.75", "volume": "40", "pitch": "low"}
    assert fake.ssml[-1]["format"] == "raw-16khz-16bit-mono-pcm"
    named = TTS.ProsodyConfig(rate="x-slow", volume="soft")
    await make_tts(origin, prosody=named).synthesize("Quietly.")
    assert fake.ssml[-1]["prosody"] == {"rate": "x-slow", "volume": "soft"}


def test_output_formats_and_default_voices():
    assert {rate: tts_azure.output_format(rate, phone=False) for rate in (8000, 16000, 22050, 24000, 44100, 48000)} == {
        8000: ("raw-8khz-16bit-mono-pcm", 8000), 16000: ("raw-16khz-16bit-mono-pcm", 16000),
        22050: ("raw-22050hz-16bit-mono-pcm", 22050), 24000: ("raw-24khz-16bit-mono-pcm", 24000),
        44100: ("raw-44100hz-16bit-mono-pcm", 44100), 48000: ("raw-48khz-16bit-mono-pcm", 48000)}
    assert tts_azure.output_format(24000, phone=True) == ("raw-8khz-8bit-mono-mulaw", 8000)
    assert tts_azure.default_voice(None) == "en-US-JennyNeural"
    assert tts_azure.default_voice("es") == "es-ES-ElviraNeural"
    assert tts_azure.default_voice("sw-KE") == "en-US-JennyMultilingualNeural"


async def test_tts_phone_asks_for_mulaw_8k(azure):
    fake, origin = azure
    tts = make_tts(origin, context(phone=True))
    assert tts.sample_rate == 8000
    session = await tts.open_session(call_id="CA1")
    assert session.sample_rate == 8000
    pcm = np.concatenate([c async for c in session.stream(SENTENCE, reply_id=1)])
    assert fake.ssml[-1]["format"] == "raw-8khz-8bit-mono-mulaw"
    assert fuzzy_ratio(SENTENCE, await heard(pcm, 8000)) > 0.7
    # The agent chose a rate explicitly: that wins over the phone format.
    explicit = make_tts(origin, context(phone=True), sample_rate=16000)
    await explicit.synthesize("Hello.")
    assert explicit.sample_rate == 16000 and fake.ssml[-1]["format"] == "raw-16khz-16bit-mono-pcm"


async def test_ssml_injection_is_spoken_not_parsed(azure):
    fake, origin = azure
    text = 'Tom & Jerry say 1 < 2 <break time="3s"/> </voice> "quoted" it\'s > done'
    await make_tts(origin).synthesize(text)
    assert fake.ssml[-1]["text"] == text
    assert fake.ssml[-1]["elements"] == ["speak", "voice"]


async def test_custom_voice_deployment(azure):
    fake, origin = azure
    await make_tts(origin, voice="MyBrandNeural", endpoint_id="5c0ffee-1234").synthesize("Hi.")
    assert fake.requests[-1]["query"] == {"deploymentId": "5c0ffee-1234"}
    assert fake.ssml[-1]["voice"] == "MyBrandNeural"
    with pytest.raises(ProviderConfigError, match="voice"):
        await make_tts(origin, endpoint_id="5c0ffee-1234").check()


async def test_tts_chunks_arrive_before_the_sentence_is_complete(azure):
    fake, origin = azure
    fake.chunk_delay = 0.05
    session = await make_tts(origin, context(phone=True)).open_session(call_id="CA2")
    seen = []
    async for chunk in session.stream(SENTENCE, reply_id=1):
        seen.append((len(chunk), fake.chunks_sent, fake.streams_completed))
    assert len(seen) > 3
    assert seen[0][2] == 0 and seen[0][1] < fake.chunks_sent  # first audio while the fake was still sending
    assert fake.streams_completed == 1


async def test_cancel_closes_the_response_at_the_provider(azure):
    fake, origin = azure
    fake.chunk_delay = 0.1
    session = await make_tts(origin).open_session(call_id="CA3")
    got, cancelled_at = 0, 0.0
    async for _ in session.stream(SENTENCE, reply_id=7):
        got += 1
        if got == 1:
            cancelled_at = time.monotonic()
            await session.cancel(7)
    assert got == 1 and time.monotonic() - cancelled_at < 1.0
    await eventually(lambda: fake.disconnects == 1)
    assert fake.streams_completed == 0
    assert [c async for c in session.stream("More of the same reply.", reply_id=7)] == []
    assert [c async for c in session.stream("Next reply.", reply_id=8)] and session._active == {}
    await session.aclose()


async def test_cancel_from_another_task_ends_the_stream_quietly(azure):
    fake, origin = azure
    fake.chunk_delay = 0.2
    session = await make_tts(origin).open_session(call_id="CA4")
    first = asyncio.Event()

    async def consume() -> int:
        n = 0
        async for _ in session.stream(SENTENCE, reply_id=3):
            n += 1
            first.set()
        return n

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 10)
    await session.cancel(3)
    assert await asyncio.wait_for(task, 2.0) >= 1
    await eventually(lambda: fake.disconnects == 1)


async def test_tts_429_with_retry_after_then_ok(azure):
    fake, origin = azure
    fake.fail("tts", Fault("429", retry_after=0.2), "500")
    started = time.monotonic()
    pcm = await make_tts(origin).synthesize("Hello again.")
    assert len(pcm) > 0 and fake.count("tts") == 3
    assert time.monotonic() - started >= 0.2  # Retry-After was honoured


async def test_tts_slow_first_byte_times_out_retries_then_fails(azure):
    fake, origin = azure
    health = ProviderHealth()
    fake.fail("tts", *[Fault("slow", delay=1.5)] * 3)
    tts = fast(make_tts(origin, context(health=health)), first_byte=0.2)
    tts.client.connect_timeout = 0.2
    started = time.monotonic()
    with pytest.raises(ProviderError, match="no audio within"):
        await tts.synthesize("Hello.")
    assert time.monotonic() - started < 3.0
    assert fake.count("tts") == 3
    assert health.snapshot()["tts.azure"]["errors_by_kind"] == {"timeout": 1}


async def test_tts_disconnect_mid_body_is_an_error_not_a_hang(azure):
    fake, origin = azure
    health = ProviderHealth()
    fake.fail("tts", "disconnect")
    session = await make_tts(origin, context(health=health)).open_session(call_id="CA5")
    got = []
    started = time.monotonic()
    with pytest.raises(ProviderError, match="broke off"):
        async for chunk in session.stream(SENTENCE, reply_id=1):
            got.append(chunk)
    assert got and time.monotonic() - started < 5.0
    assert fake.count("tts") == 1  # audio was already delivered: never retried
    assert health.snapshot()["tts.azure"]["errors_by_kind"] == {"disconnected": 1}


@pytest.mark.parametrize("kind", ["empty", "json"])
async def test_tts_no_audio_in_a_200_is_a_protocol_error(azure, kind):
    fake, origin = azure
    fake.fail("tts", kind)
    with pytest.raises(ProviderError):
        await make_tts(origin).synthesize("Hello.")
    assert fake.count("tts") == 1


async def test_tts_401_names_the_variable(azure):
    fake, origin = azure
    with pytest.raises(ProviderAuthError, match="AZURE_API_KEY"):
        await make_tts(origin, api_key="nope").synthesize("Hello.")
    with pytest.raises(ProviderAuthError, match="AZURE_API_KEY"):
        await make_tts(origin, api_key="nope").check()


async def test_the_key_never_leaks(azure, caplog):
    fake, origin = azure
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    stt, tts = make_stt(origin), make_tts(origin)
    await stt.check()
    await stt.transcribe(await speech16k("Hello."))
    await tts.synthesize("Hello.")
    fake.fail("tts", "429", "429", "429")
    fake.fail("stt", "malformed")
    for action in (lambda: tts.synthesize("Hi."), lambda: stt.transcribe(np.zeros(1600, np.float32))):
        try:
            await action()
        except ProviderError as exc:
            errors.append(exc)
    assert len(errors) == 2
    everything = caplog.text + "".join(map(str, errors)) + "".join(map(repr, errors)) + repr(stt) + repr(tts)
    everything += " ".join(r["url"] for r in fake.requests) + str(fake.requests)
    assert KEY not in everything
    assert all(r["auth"] == "key" for r in fake.requests)


# --- end to end -----------------------------------------------------------------------------------------------
AZURE_AGENT = Path(__file__).parent / "agents" / "azure_agent.py"


async def test_call_hears_and_answers_through_azure(auth_token, monkeypatch):
    from agents.azure_agent import ANSWER, GREETING
    from telebridge.simulator import Say, simulate_call

    fake = FakeAzureSpeech(key=KEY)
    app = ThreadedApp(fake.app).start()
    monkeypatch.setenv("AZURE_API_KEY", KEY)
    monkeypatch.setenv("AZURE_REGION", "eastus")
    server = LiveServer(agent=str(AZURE_AGENT), azure_speech_base_url=app.origin).start()
    try:
        call = await simulate_call(
            server.url, script=[Say(at=None, text=QUESTION, after_agent_quiet=0.8)], auth_token=auth_token,
            duration=30, end_when_quiet=1.5, transcribe=True)
        record = await finished_call(server, call.call_sid)
    finally:
        server.stop()
        app.stop()
    user = [m["content"] for m in record.history if m["role"] == "user"]
    assert user and fuzzy_ratio(QUESTION, user[0]) > 0.6, record.history
    assert record.history[-1] == {"role": "assistant", "content": ANSWER}
    spoken = [s["text"] for s in fake.ssml]
    assert spoken[0] == GREETING and ANSWER in " ".join(spoken[1:]), spoken  # replies go out sentence by sentence
    assert all(s["format"] == "raw-8khz-8bit-mono-mulaw" and s["prosody"] == {"rate": "1.1"} for s in fake.ssml)
    assert fake.count("stt") >= 1 and fake.count("token") >= 1
    assert all(r["query"].get("language") == "en-US" for r in fake.requests if r["endpoint"] == "stt")
    heard_text = " ".join(seg.text for seg in call.agent_segments)
    greeting, rest = leading_text(call.agent_segments, GREETING)
    assert fuzzy_ratio(GREETING, greeting) > 0.6, heard_text
    assert fuzzy_ratio(ANSWER, rest) > 0.6, heard_text
