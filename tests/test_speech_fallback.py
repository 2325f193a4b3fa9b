"""CallSpeech: picking providers at call start, and falling back mid-call, with stub engines (no network)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from telebridge.config import STT, TTS
from telebridge.pipeline.speech import CallSpeech
from telebridge.providers.errors import ProviderAuthError, ProviderError
from telebridge.providers.health import ProviderHealth
from telebridge.providers.retry import RetryPolicy, with_retries
from telebridge.providers.stt.base import Transcript
from telebridge.session import SessionConfig


class StubTTS:
    def __init__(self, name: str, rate: int, *, bad_key: bool = False, fail_after: int | None = None) -> None:
        self.name, self.sample_rate, self.bad_key, self.fail_after = name, rate, bad_key, fail_after
        self.said: list[str] = []
        self.cancelled: list[int] = []

    async def check(self) -> None:
        if self.bad_key:
            raise ProviderAuthError(self.name, "STUB_API_KEY")

    async def open_session(self, *, call_id: str) -> StubTTS:
        return self

    async def stream(self, text: str, *, reply_id: int):
        self.said.append(text)
        for i in range(3):
            if self.fail_after is not None and i >= self.fail_after:
                raise ProviderError(self.name, "socket dropped", retryable=True)
            yield np.full(80, i + 1, dtype=np.int16)

    async def cancel(self, reply_id: int) -> None:
        self.cancelled.append(reply_id)

    async def end_reply(self, reply_id: int) -> None:
        return None

    async def aclose(self) -> None:
        return None


class StubSTT:
    def __init__(self, name: str, *, fail: bool = False) -> None:
        self.name, self.fail = name, fail
        self.calls = 0

    async def transcribe(self, audio: np.ndarray, *, language: str | None = None) -> Transcript:
        self.calls += 1
        if self.fail:
            raise ProviderError(self.name, "HTTP 503", retryable=True, status=503)
        return Transcript(text=f"{self.name} heard {len(audio)}")


class StubRuntime:
    def __init__(self, stt: dict[str, Any], tts: dict[str, Any]) -> None:
        self.stt, self.tts = stt, tts
        self.provider_health = ProviderHealth()

    async def stt_for(self, cfg: Any, *, phone: bool = False) -> Any:
        return self.stt[cfg.provider]

    async def tts_for(self, cfg: Any, *, phone: bool = False) -> Any:
        return self.tts[cfg.provider]


def speech(runtime: StubRuntime, **cfg: Any) -> CallSpeech:
    return CallSpeech(runtime, SessionConfig(initial_messages=[], **cfg), call_id="CAtest", input_rate=8000,
                      phone=True)


async def collect(sp: CallSpeech, text: str) -> list[tuple[int, int]]:
    return [(int(chunk[0]), rate) async for chunk, rate in sp.speak(text, 1)]


async def test_a_bad_key_at_call_start_falls_back_and_names_the_variable(caplog) -> None:
    rt = StubRuntime({"whisper": StubSTT("whisper")},
                     {"elevenlabs": StubTTS("elevenlabs", 8000, bad_key=True), "piper": StubTTS("piper", 22050)})
    sp = speech(rt, tts=TTS.ElevenLabs(api_key="sk-secret-value"))
    with caplog.at_level(logging.ERROR):
        await sp.start()
    assert sp.tts_cfg.provider == "piper"
    assert "STUB_API_KEY" in caplog.text and "using TTS.Piper instead" in caplog.text
    assert "sk-secret-value" not in caplog.text
    assert rt.provider_health.snapshot()["tts.elevenlabs"]["fallbacks"] == 1  # the client counts its own errors


async def test_tts_failing_mid_sentence_apologises_in_the_fallback_voice_and_keeps_it() -> None:
    cloud, local = StubTTS("cartesia", 8000, fail_after=1), StubTTS("piper", 22050)
    rt = StubRuntime({"whisper": StubSTT("whisper")}, {"cartesia": cloud, "piper": local})
    sp = speech(rt, tts=TTS.Cartesia(api_key="k"), provider_failure_message="Sorry about that.")
    await sp.start()
    chunks = await collect(sp, "Your table is booked.")
    assert chunks[0] == (1, 8000)  # the cloud voice's first chunk went out before it failed
    assert all(rate == 22050 for _, rate in chunks[1:]) and len(chunks) == 1 + 6
    assert local.said == ["Sorry about that.", "Your table is booked."]
    assert await collect(sp, "Anything else?") == [(1, 22050), (2, 22050), (3, 22050)]
    assert cloud.said == ["Your table is booked."]


async def test_the_fallback_list_is_tried_in_order_before_the_embedded_stack() -> None:
    rt = StubRuntime({"whisper": StubSTT("whisper")},
                     {"elevenlabs": StubTTS("elevenlabs", 8000, fail_after=0), "deepgram": StubTTS("deepgram", 8000),
                      "piper": StubTTS("piper", 22050)})
    sp = speech(rt, tts=TTS.ElevenLabs(api_key="k"), fallback_tts=[TTS.Deepgram(api_key="k")])
    await sp.start()
    chunks = await collect(sp, "Hello.")
    assert chunks and all(rate == 8000 for _, rate in chunks) and sp.tts_cfg.provider == "deepgram"


async def test_stt_failure_transcribes_the_same_utterance_with_the_fallback() -> None:
    cloud, local = StubSTT("openai", fail=True), StubSTT("whisper")
    rt = StubRuntime({"openai": cloud, "whisper": local}, {"piper": StubTTS("piper", 22050)})
    sp = speech(rt, stt=STT.OpenAI(api_key="k"))
    await sp.start()
    audio = np.zeros(8000, dtype=np.float32)  # 0.5 s at the VAD's 16 kHz
    result = await sp.transcribe(audio, 16000, 1.0, 1.5)
    assert result is not None and result.text == "whisper heard 8000"
    assert cloud.calls == 1 and sp.stt_cfg.provider == "whisper"


async def test_a_cancelled_reply_is_cancelled_at_the_provider() -> None:
    tts = StubTTS("deepgram", 8000)
    rt = StubRuntime({"whisper": StubSTT("whisper")}, {"deepgram": tts})
    sp = speech(rt, tts=TTS.Deepgram(api_key="k"))
    await sp.start()
    await sp.cancel_reply(7)
    assert tts.cancelled == [7]


async def test_no_working_provider_at_all_fails_the_start() -> None:
    rt = StubRuntime({"whisper": StubSTT("whisper")}, {"elevenlabs": StubTTS("e", 8000, bad_key=True),
                                                       "piper": StubTTS("p", 22050, bad_key=True)})
    with pytest.raises(Exception, match="no text-to-speech provider works"):
        await speech(rt, tts=TTS.ElevenLabs(api_key="k")).start()


async def test_retries_only_retryable_failures_then_give_up() -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ProviderError("p", "HTTP 429", retryable=True, status=429)
        return "ok"

    assert await with_retries(flaky, provider="p", policy=RetryPolicy(3, 0.001, 0.002)) == "ok"
    assert len(attempts) == 3

    async def bad_key() -> str:
        attempts.append(1)
        raise ProviderAuthError("p", "P_KEY")

    attempts.clear()
    with pytest.raises(ProviderAuthError):
        await with_retries(bad_key, provider="p", policy=RetryPolicy(3, 0.001, 0.002))
    assert len(attempts) == 1


def test_full_jitter_stays_within_the_cap() -> None:
    import random

    policy, rng = RetryPolicy(5, 0.1, 0.5), random.Random(1)
    delays = [policy.delay(n, rng) for n in range(5) for _ in range(50)]
    assert max(delays) <= 0.5 and min(delays) >= 0.0


async def test_a_provider_that_never_closes_does_not_hold_the_call(monkeypatch) -> None:
    import asyncio

    import telebridge.pipeline.speech as speech_module

    class Stuck(StubTTS):
        async def aclose(self) -> None:
            await asyncio.Event().wait()  # never answers the goodbye

    rt = StubRuntime({"whisper": StubSTT("whisper")}, {"deepgram": Stuck("deepgram", 8000)})
    sp = speech(rt, tts=TTS.Deepgram(api_key="k"))
    await sp.start()
    monkeypatch.setattr(speech_module, "CLOSE_TIMEOUT", 0.05)
    await asyncio.wait_for(sp.aclose(), 1.0)
