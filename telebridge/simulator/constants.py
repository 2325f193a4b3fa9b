"""The simulator's clock and audio constants, shared by its parts."""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

RATE: Final = 8000
TICK: Final = 0.02
FRAME: Final = 160
SPEECH_RMS: Final = 10 ** (-45 / 20)
"""A 20 ms frame louder than −45 dBFS counts as agent speech (μ-law idle noise and TTS tails sit well below)."""
SEGMENT_GAP: Final = 0.4
"""Agent speech separated by at least this much silence is two segments."""
_DTMF_DIGITS: Final = frozenset("0123456789*#")
_EPS: Final = 1e-9

Side: TypeAlias = Literal["caller", "agent", "twilio"]
FloatArray: TypeAlias = npt.NDArray[np.float32]
