"""Pitch for Piper voices, by relabelling the sample rate.

Piper has no pitch control. Audio played ``p`` times faster sounds ``p`` times higher (and ``p`` times shorter),
so a pitched voice synthesises with ``length_scale × p`` (longer) and declares its audio to be at
``rate × p``: the conversation loop's resampler then plays it at the original speed and the higher pitch. It
costs nothing at run time and keeps the stream click-free. Formants move with the pitch, so large factors
sound like a smaller (or larger) speaker rather than the same one singing higher; the TTS config keeps the
factor within 0.7–1.4.

The declared rate is rounded to a multiple of 50 Hz so that the resampler's rational ratio stays small.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RATE_STEP = 50


def pitched_rate(base_rate: int, pitch: float) -> int:
    """The sample rate a voice at ``base_rate`` declares to sound ``pitch`` times higher."""
    return max(RATE_STEP, int(round(base_rate * pitch / RATE_STEP)) * RATE_STEP)


class PitchedTTS:
    """A TTS engine whose audio is declared at ``sample_rate`` instead of the inner engine's rate."""

    def __init__(self, engine: Any, sample_rate: int) -> None:
        self.engine = engine
        self.sample_rate = int(sample_rate)
        self.pitch = self.sample_rate / float(engine.sample_rate)

    async def synthesize(self, text: str) -> np.ndarray:
        return await self.engine.synthesize(text)

    async def warmup(self) -> None:
        warm = getattr(self.engine, "warmup", None)
        if warm is not None:
            await warm()
