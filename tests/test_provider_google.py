"""The real Google Cloud TTS client (google-auth service-account tokens + text:synthesize) against a local fake.

The fake's token endpoint runs on the test's own event loop: the client's blocking token refresh would deadlock
the test if it ran on the loop instead of a worker thread.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fakes.google_tts import FakeGoogleTTS
from fakes.serve import serve_app
from fakes.speech import speech_backend
from speechutil import fuzzy_ratio, resample
from telebridge.config import TTS
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import ProviderAuthError, ProviderError
from telebridge.providers.health import ProviderHealth
from telebridge.providers.tts.base import open_session
from telebridge.providers.tts.google import create
from telebridge.settings import Settings

SENTENCE = "The quick brown fox jumps over the lazy dog."
EMAIL = "tts-bot@test-project.iam.gserviceaccount.com"
KEY_ID = "0123456789abcdef0123456789abcdef01234567"


def _keypair() -> tuple[str, object]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, key.public_key()


PRIVATE_PEM, PUBLIC_KEY = _keypair()


def service_account(origin: str, pem: str = PRIVATE_PEM) -> dict:
    return {"type": "service_account", "project_id": "test-project", "private_key_id": KEY_ID, "private_key": pem,
            "client_email": EMAIL, "client_id": "1234567890", "token_uri": origin + "/token"}


def fake_google(**knobs) -> FakeGoogleTTS:
    return FakeGoogleTTS(public_key=PUBLIC_KEY, client_email=EMAIL, key_id=KEY_ID, **knobs)



@pytest.fixture(autouse=True, scope="module")
def _warm_speech():
    """Load the fake's Piper/Whisper before any test times a first byte (a cold load takes seconds)."""
    speech_backend().piper_rate


def engine_for(origin: str, *, phone: bool = False, credentials=None, **fields):
    cfg = TTS.Google(base_url=origin, credentials=credentials or service_account(origin), **fields)
    ctx = ProviderContext(Settings(_env_file=None), None, ProviderHealth(), phone=phone)  # type: ignore[arg-type]
    return create(cfg, ctx)


async def heard(pcm: np.ndarray, rate: int) -> str:
    return await speech_backend().transcribe(resample(pcm.astype(np.float32) / 32768.0, rate, 16000))


async def test_phone_call_gets_mulaw_and_every_field_is_mapped(caplog):
    caplog.set_level(logging.DEBUG)
    fake = fake_google(extra_wav_chunk=True)
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin, phone=True, language="en-GB", gender="female", voice_name="en-GB-Standard-A",
                            pitch=2.5, speaking_rate=1.25, effects_profile_id="telephony-class-application")
        assert engine.sample_rate == 8000
        await engine.check()
        session = await open_session(engine, call_id="CA1")
        chunks = [c async for c in session.stream(SENTENCE, reply_id=1)]
        again = await engine.synthesize("Hello.")
    assert session.sample_rate == 8000 and len(chunks) == 1 and chunks[0].dtype == np.int16
    assert np.array_equal(again, _ulaw_roundtrip(fake.last_pcm))  # the WAV header (with a LIST chunk) is gone
    assert fuzzy_ratio(SENTENCE, await heard(chunks[0], 8000)) > 0.8
    assert fake.token_requests == 1 and not fake.token_rejections  # signed JWT verified; token cached
    first = fake.requests[0]
    assert first["path"] == "/v1/text:synthesize" and first["query"] == {} and first["bearer"]
    assert first["body"] == {
        "input": {"text": SENTENCE},
        "voice": {"languageCode": "en-GB", "name": "en-GB-Standard-A", "ssmlGender": "FEMALE"},
        "audioConfig": {"audioEncoding": "MULAW", "sampleRateHertz": 8000, "speakingRate": 1.25, "pitch": 2.5,
                        "effectsProfileId": ["telephony-class-application"]},
    }
    for secret in (PRIVATE_PEM.splitlines()[1], *fake.issued):
        assert secret not in caplog.text


def _ulaw_roundtrip(pcm: np.ndarray) -> np.ndarray:
    from telebridge.audio.g711 import ulaw_decode, ulaw_encode

    return ulaw_decode(ulaw_encode(pcm))


async def test_linear16_header_is_parsed_not_assumed_and_defaults_omit_empty_fields():
    fake = fake_google(extra_wav_chunk=True)
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin, sample_rate=16000, gender="", encoding="wav")
        pcm = await engine.synthesize("Good morning.")
        neutral = engine_for(origin)
        await neutral.synthesize("Hi.")
    assert engine.sample_rate == 16000 and len(pcm) > 8000
    body = fake.requests[0]["body"]
    assert body["voice"] == {"languageCode": "en-US"}
    assert body["audioConfig"] == {"audioEncoding": "LINEAR16", "sampleRateHertz": 16000}  # neutral rate/pitch omitted
    assert fake.requests[1]["body"]["voice"] == {"languageCode": "en-US", "ssmlGender": "NEUTRAL"}
    assert fake.requests[1]["body"]["audioConfig"]["sampleRateHertz"] == 24000


async def test_linear16_samples_come_back_exactly():
    fake = fake_google(extra_wav_chunk=True)
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin, sample_rate=22050)
        pcm = await engine.synthesize("Exactly these samples.")
    assert np.array_equal(pcm, fake.last_pcm)


async def test_explicit_mp3_on_a_phone_call_is_decoded():
    fake = fake_google()
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin, phone=True, encoding="mp3", sample_rate=24000)
        assert engine.sample_rate == 24000
        pcm = await engine.synthesize(SENTENCE)
    assert fake.requests[0]["body"]["audioConfig"]["audioEncoding"] == "MP3"
    assert abs(len(pcm) - len(fake.last_pcm)) < 0.1 * len(fake.last_pcm)
    assert fuzzy_ratio(SENTENCE, await heard(pcm, 24000)) > 0.8


async def test_auth_failures_name_the_env_var(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    fake = fake_google()
    other_pem, _ = _keypair()
    async with serve_app(fake.app) as origin:
        wrong = engine_for(origin, credentials=service_account(origin, other_pem))
        with pytest.raises(ProviderAuthError, match="GOOGLE_CREDENTIALS"):
            await wrong.check()
        assert fake.token_rejections == ["Invalid JWT Signature."]
        with pytest.raises(ProviderAuthError):
            await wrong.check()  # cached failure
        assert fake.token_requests == 1

        monkeypatch.delenv("GOOGLE_CREDENTIALS", raising=False)
        missing = engine_for(origin, credentials=None)
        missing.cfg.credentials = None
        with pytest.raises(ProviderAuthError, match="GOOGLE_CREDENTIALS"):
            await missing.check()
        broken = engine_for(origin, credentials={"type": "service_account", "client_email": EMAIL})
        with pytest.raises(ProviderAuthError, match="GOOGLE_CREDENTIALS"):
            await broken.check()

        engine = engine_for(origin)
        await engine.synthesize("Hi.")
        fake.revoke_tokens()
        with pytest.raises(ProviderAuthError, match="GOOGLE_CREDENTIALS") as info:
            await engine.synthesize("Hi.")
        assert await engine.synthesize("Hi again.") is not None  # the refused token was dropped: a new one
        assert fake.token_requests == 3
        fake.statuses = [403]
        with pytest.raises(ProviderAuthError, match="HTTP 403"):
            await engine.synthesize("Hi.")
    assert engine.ctx.health.snapshot()["tts.google"]["errors_by_kind"] == {"auth": 2}
    for secret in (PRIVATE_PEM.splitlines()[1], other_pem.splitlines()[1], *fake.issued):
        assert secret not in caplog.text and secret not in str(info.value)


async def test_rate_limit_and_server_errors_are_retried():
    fake = fake_google(statuses=[429, 503])
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin)
        pcm = await engine.synthesize("Hello.")
        fake.disconnects = 1
        again = await engine.synthesize("Hello again.")
    assert len(pcm) and len(again)
    assert len(fake.requests) == 5


async def test_token_refreshed_near_expiry_only():
    fake = fake_google(token_lifetime=3600)
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin)
        await engine.synthesize("One.")
        await engine.synthesize("Two.")
        assert fake.token_requests == 1
        fake.token_lifetime = 120  # shorter than the refresh margin: every use refreshes
        engine._forget_token()
        await engine.synthesize("Three.")
        await engine.synthesize("Four.")
    assert fake.token_requests == 3


@pytest.mark.parametrize("fault", ["slow", "disconnect", "malformed"])
async def test_faults_fail_in_bounded_time(fault):
    fake = fake_google()
    if fault == "slow":
        fake.slow_first_byte = 3.0
    elif fault == "disconnect":
        fake.disconnects = 3
    else:
        fake.malformed = 1
    async with serve_app(fake.app) as origin:
        engine = engine_for(origin)
        # Only the slow fault is about the first-byte timeout; the others must be told apart from a slow answer
        # on a loaded machine, so they get a timeout they cannot reach.
        engine.first_byte_timeout = 0.3 if fault == "slow" else 5.0
        await engine.check()
        started = time.monotonic()
        with pytest.raises(ProviderError):
            await engine.synthesize("Hello.")
        elapsed = time.monotonic() - started
    assert elapsed < (5.0 if fault == "slow" else 20.0)
    kinds = engine.ctx.health.snapshot()["tts.google"]["errors_by_kind"]
    assert kinds == {{"slow": "timeout", "disconnect": "disconnected", "malformed": "protocol"}[fault]: 1}
    assert len(fake.requests) == (1 if fault == "malformed" else 3)
