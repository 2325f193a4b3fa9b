"""Streaming STT failing mid-call (``bench/load.py --fault provider-down`` found both): the utterance being
transcribed is not lost, and a fallback stream opened mid-call keeps its words on the call's clock."""

from __future__ import annotations

from typing import Any

import numpy as np

from telebridge.config import STT, TTS
from telebridge.pipeline.speech import CallSpeech
from telebridge.providers.errors import ProviderError
from telebridge.providers.health import ProviderHealth
from telebridge.providers.stt.base import Transcript
from telebridge.providers.stt.deepgram import DeepgramStream
from telebridge.session import SessionConfig
from test_speech_fallback import StubTTS

BACKUP = "http://backup.invalid"


class Stream:
    def __init__(self, engine: StreamingSTT, start: float) -> None:
        self.engine, self.start = engine, start
        self.failed = False
        self.fed = 0

    def feed(self, pcm: np.ndarray) -> None:
        self.fed += len(pcm)

    def words(self, start: float, end: float | None = None) -> str:
        return ""

    async def transcript(self, start: float, end: float) -> Transcript:
        if self.engine.stream_error is not None:
            self.failed = self.engine.stream_dies
            raise ProviderError(self.engine.name, self.engine.stream_error, retryable=True)
        return Transcript(text=f"{self.engine.name} stream heard {start:.1f}-{end:.1f}")

    async def aclose(self) -> None:
        return None


class StreamingSTT:
    def __init__(self, name: str, *, stream_error: str | None = None, stream_dies: bool = False,
                 rest_fails: bool = False) -> None:
        self.name, self.stream_error, self.stream_dies, self.rest_fails = name, stream_error, stream_dies, rest_fails
        self.streams: list[Stream] = []
        self.whole = 0

    async def open_stream(self, *, input_rate: int, call_id: str, start: float = 0.0) -> Stream:
        self.streams.append(Stream(self, start))
        return self.streams[-1]

    async def transcribe(self, audio: np.ndarray, *, language: str | None = None) -> Transcript:
        self.whole += 1
        if self.rest_fails:
            raise ProviderError(self.name, "ConnectError", retryable=True)
        return Transcript(text=f"{self.name} heard {len(audio)} samples whole")


class Runtime:
    def __init__(self, primary: StreamingSTT, backup: StreamingSTT) -> None:
        self.engines = {None: primary, BACKUP: backup}
        self.provider_health = ProviderHealth()

    async def stt_for(self, cfg: Any, *, phone: bool = False) -> Any:
        return self.engines[cfg.base_url]

    async def tts_for(self, cfg: Any, *, phone: bool = False) -> Any:
        return StubTTS("piper", 22050)


def _speech(primary: StreamingSTT, backup: StreamingSTT) -> CallSpeech:
    config = SessionConfig(initial_messages=[], stt=STT.Deepgram(api_key="k"),
                           fallback_stt=[STT.Deepgram(api_key="k", base_url=BACKUP)], tts=TTS.Piper())
    return CallSpeech(Runtime(primary, backup), config, call_id="CAtest", input_rate=8000, phone=True)


async def test_a_stream_dead_for_good_hands_the_utterance_whole_to_the_fallback_on_the_calls_clock() -> None:
    primary = StreamingSTT("primary", stream_error="live transcription failed", stream_dies=True, rest_fails=True)
    backup = StreamingSTT("backup")
    sp = _speech(primary, backup)
    await sp.start()
    sp.feed(np.zeros(8000 * 12, np.float32))  # 12 s into the call
    result = await sp.transcribe(np.zeros(16000, np.float32), 16000, 10.0, 11.0)
    assert result is not None and result.text == "backup heard 16000 samples whole"  # not its fresh stream's words
    assert backup.streams[0].start == 12.0  # the fallback stream's clock starts at the call's now
    assert sp.streaming and sp.stream is backup.streams[0]
    assert await sp.transcribe(np.zeros(16000, np.float32), 16000, 13.0, 14.0) is not None
    assert backup.whole == 1  # the next utterances come from the backup's stream again


async def test_a_stream_reconnecting_mid_turn_transcribes_that_utterance_whole_and_carries_on() -> None:
    primary = StreamingSTT("primary", stream_error="live transcription interrupted")
    sp = _speech(primary, StreamingSTT("backup"))
    await sp.start()
    result = await sp.transcribe(np.zeros(8000, np.float32), 16000, 1.0, 1.5)
    assert result is not None and result.text == "primary heard 8000 samples whole"
    assert sp.stream is primary.streams[0] and not sp.fallbacks  # the same provider, its stream kept


def test_a_deepgram_stream_opened_mid_call_times_its_audio_on_the_call_clock() -> None:
    engine = type("Engine", (), {"encoding": "mulaw", "stream_rate": 8000, "batch_seconds": 0.1,
                                 "queue_seconds": 5.0})()
    stream = DeepgramStream(engine, input_rate=8000, call_id="CAtest", start=42.0)  # type: ignore[arg-type]
    stream.feed(np.zeros(800, np.float32))  # 100 ms: one message
    (item,) = stream._queue
    assert item.t0 == 42.0 and item.dur == 0.1
