"""Text-to-speech engine contract.

The agent's reply is split into sentences upstream and each sentence is synthesized
separately, so the first audio reaches the caller after one short synthesis instead of
after the whole reply.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["TTSEngine", "TTSError"]


class TTSError(RuntimeError):
    """Synthesis failed, or the engine could not be set up (e.g. missing voice model)."""


@runtime_checkable
class TTSEngine(Protocol):
    """A sentence synthesizer.  Implementations must be safe for concurrent calls."""

    sample_rate: int
    """Rate (Hz) of the audio returned by :meth:`synthesize`."""

    async def synthesize(self, text: str) -> np.ndarray:
        """Speak one sentence/chunk: int16 mono at ``sample_rate``; empty for blank text."""
        ...
