"""Speech-to-text engine contract shared by the embedded Whisper engine and any remote one.

Engines take complete utterances (the VAD segmenter already cut them), not streams:
phone turns are short, and batch transcription of a whole turn is both simpler and
more accurate for Whisper-class models than incremental decoding.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = ["STT_SAMPLE_RATE", "STTEngine", "STTError", "Transcript"]

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
