"""Speech-to-text engine contracts shared by the embedded Whisper engine and the cloud clients.

Every engine transcribes complete utterances (:class:`STTEngine`: the VAD segmenter already cut them). A
streaming provider (Deepgram) also implements :class:`StreamingSTTEngine`: one :class:`STTStream` per call,
fed the caller's audio as it arrives, whose interim words drive barge-in and whose final words of an
utterance are ready moments after the caller stops. The utterance path stays the fallback: if a stream dies
for good mid-call, the VAD's copy of the utterance is transcribed by the next engine and no words are lost.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = ["STT_SAMPLE_RATE", "STTEngine", "STTError", "STTStream", "StreamingSTTEngine", "Transcript"]

STT_SAMPLE_RATE = 16000
"""Every engine receives float32 mono audio at this rate (Whisper's native rate)."""


class STTError(RuntimeError):
    """Transcription failed (bad input, model missing or the engine raised)."""


class Transcript(BaseModel):
    """Result of transcribing one utterance.  ``text`` is "" when nothing was said."""

    model_config = ConfigDict(frozen=True)

    text: str
    language: str | None = None
    duration: float = 0.0  # seconds of audio that were transcribed
    avg_logprob: float | None = None  # mean token log-probability, when the engine has it
    no_speech_prob: float | None = None  # the engine's "this was silence" probability

    @property
    def is_empty(self) -> bool:
        return not self.text.strip()


@runtime_checkable
class STTEngine(Protocol):
    """An utterance transcriber.  Implementations must be safe for concurrent calls."""

    async def transcribe(
        self, audio: np.ndarray, *, language: str | None = None
    ) -> Transcript:
        """Transcribe float32 mono audio at :data:`STT_SAMPLE_RATE`."""
        ...


@runtime_checkable
class STTStream(Protocol):
    """One call's streaming recogniser, reused across turns and closed with the call.

    Times are seconds of audio fed to the stream since it opened, which is the call's clock: the call feeds
    every frame of caller audio, in order, from the first one.
    """

    failed: bool
    """The provider is gone for good (reconnects exhausted): the call falls back to the next engine."""

    def feed(self, pcm: np.ndarray) -> None:
        """Caller audio (float32 mono at the stream's ``input_rate``). Hot path: never blocks, never raises.

        A stream with a true ``takes_ulaw`` attribute (optional; Deepgram's on a phone call) is fed
        ``feed(pcm, ulaw)`` when the frame arrived as μ-law bytes and nothing altered it since: it sends those
        bytes as they are instead of re-encoding ``pcm``."""
        ...

    def words(self, start: float, end: float | None = None) -> str:
        """The words (final and interim) heard between ``start`` and ``end`` (None: up to now), as text."""
        ...

    async def transcript(self, start: float, end: float) -> Transcript:
        """The final words of the utterance spanning ``[start, end]``: the provider is told to finalize what it
        holds (Deepgram's ``Finalize``), so the last words arrive at once. Raises :class:`STTError` when the
        provider is unreachable."""
        ...

    async def aclose(self) -> None:
        ...


@runtime_checkable
class StreamingSTTEngine(Protocol):
    """An engine that can also stream (one connection per call)."""

    async def open_stream(self, *, input_rate: int, call_id: str, start: float = 0.0) -> STTStream:
        """Connect (while the phone is still at the greeting) and return the call's stream. ``start``: the call
        clock of the first audio it will be fed (a fallback stream opened mid-call), so word times stay on it."""
        ...
