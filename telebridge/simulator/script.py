"""Scripts: what a simulated caller (or callee) does — :class:`Say`, :class:`Play`, :class:`Dtmf`,
:class:`Hangup` — and the line they do it on (:class:`LineEcho`, :func:`noise_burst`).

The script runs in order; ``at`` is the earliest time an action may fire and ``after_agent_quiet`` makes it wait
until the agent has spoken since the previous action and then been silent that long. ``after_agent_speech``
fires once that many seconds of agent audio were heard since the previous action.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from .constants import _DTMF_DIGITS, RATE, FloatArray

_TAIL_SHARE = 0.25

__all__ = ["Say", "Play", "Dtmf", "Hangup", "EchoChange", "Action", "LineEcho", "noise_burst"]


def _check_timing(at: float | None, after_agent_quiet: float | None, after_agent_speech: float | None = None) -> None:
    if at is not None and not (math.isfinite(at) and at >= 0):
        raise ValueError(f"at must be a finite time >= 0, got {at!r}")
    if after_agent_quiet is not None and not (math.isfinite(after_agent_quiet) and after_agent_quiet > 0):
        raise ValueError(f"after_agent_quiet must be > 0 seconds, got {after_agent_quiet!r}")
    if after_agent_speech is not None and not (math.isfinite(after_agent_speech) and after_agent_speech > 0):
        raise ValueError(f"after_agent_speech must be > 0 seconds, got {after_agent_speech!r}")
    if after_agent_quiet is not None and after_agent_speech is not None:
        raise ValueError("use after_agent_quiet or after_agent_speech, not both")


@dataclass(frozen=True)
class Say:
    """Speak ``text`` (synthesized with Piper, sent as 8 kHz μ-law)."""

    at: float | None
    text: str
    after_agent_quiet: float | None = None
    after_agent_speech: float | None = None

    def __post_init__(self) -> None:
        _check_timing(self.at, self.after_agent_quiet, self.after_agent_speech)
        if not self.text.strip():
            raise ValueError("Say needs some text")


@dataclass(frozen=True, eq=False)
class Play:
    """Send recorded audio (8 kHz float32 mono). ``text``, if known, is its transcript (otherwise Whisper's)."""

    at: float | None
    audio: FloatArray
    after_agent_quiet: float | None = None
    text: str | None = None
    after_agent_speech: float | None = None

    def __post_init__(self) -> None:
        _check_timing(self.at, self.after_agent_quiet, self.after_agent_speech)
        arr = np.asarray(self.audio, dtype=np.float32)
        if arr.ndim != 1:
            raise ValueError("Play audio must be mono (1-D)")
        object.__setattr__(self, "audio", arr)


@dataclass(frozen=True)
class Dtmf:
    """Press a key (Twilio sends a ``dtmf`` event)."""

    at: float | None
    digit: str
    after_agent_quiet: float | None = None
    after_agent_speech: float | None = None

    def __post_init__(self) -> None:
        _check_timing(self.at, self.after_agent_quiet, self.after_agent_speech)
        if len(self.digit) != 1 or self.digit not in _DTMF_DIGITS:
            raise ValueError(f"DTMF digit must be one of 0-9 * #, got {self.digit!r}")


@dataclass(frozen=True)
class Hangup:
    """Hang up: Twilio sends ``stop`` and closes the socket."""

    at: float | None = None
    after_agent_quiet: float | None = None
    after_agent_speech: float | None = None

    def __post_init__(self) -> None:
        _check_timing(self.at, self.after_agent_quiet, self.after_agent_speech)


@dataclass(frozen=True)
class LineEcho:
    """The caller's line echoes what they hear back to the server: ``gain_db`` down, ``delay`` seconds late.

    ``tail`` (seconds, the decay time constant) adds a room's reverberation after the direct echo, the way a
    speakerphone sounds (the total echo power stays ``gain_db`` below what was heard); ``drift_ppm`` lets the
    phone's clock run that many parts per million off Twilio's, so the delay creeps while the echo lasts.
    """

    gain_db: float = -20.0
    delay: float = 0.2
    tail: float = 0.0
    drift_ppm: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gain_db) and self.gain_db <= 0):
            raise ValueError(f"gain_db must be <= 0, got {self.gain_db!r}")
        if not (0 <= self.delay <= 2.0):
            raise ValueError(f"delay must be within 0..2 s, got {self.delay!r}")
        if not (0 <= self.tail <= 0.5):
            raise ValueError(f"tail must be within 0..0.5 s, got {self.tail!r}")
        if not (math.isfinite(self.drift_ppm) and abs(self.drift_ppm) <= 1000):
            raise ValueError(f"drift_ppm must be within ±1000, got {self.drift_ppm!r}")

    def impulse(self) -> FloatArray:
        """The echo path's impulse response after the delay (unit power gain before ``gain_db``)."""
        if self.tail <= 0:
            h = np.ones(1)
        else:
            n = int(3 * self.tail * RATE) + 1
            k = np.arange(n)
            h = np.random.default_rng(self.seed).standard_normal(n) * np.exp(-k / (self.tail * RATE))
            h[0] = 0.0
            h *= np.sqrt(_TAIL_SHARE / np.sum(h * h))  # the room: a quarter of the direct echo's power
            h[0] = 1.0
        h = h / np.sqrt(np.sum(h * h))
        return (h * 10 ** (self.gain_db / 20)).astype(np.float32)


@dataclass(frozen=True)
class EchoChange:
    """The line's echo changes mid-call (speakerphone on or off, a car kit, a hybrid): ``echo`` from now on
    (``None``: no echo). Timed like the caller's actions."""

    at: float | None
    echo: LineEcho | None
    after_agent_quiet: float | None = None
    after_agent_speech: float | None = None

    def __post_init__(self) -> None:
        _check_timing(self.at, self.after_agent_quiet, self.after_agent_speech)


Action: TypeAlias = Say | Play | Dtmf | Hangup | EchoChange


def noise_burst(
    duration: float = 0.3, dbfs: float = -12.0, *, seed: int = 0, rate: int = RATE, voiced: bool = False
) -> FloatArray:
    """A cough-like burst: band-limited noise (or a breathy 120 Hz buzz) with a sharp attack and fast decay.

    Peak level ``dbfs``; ``duration`` seconds. Speech detectors mostly (and rightly) ignore it; it is the
    "caller coughs over the agent" of the scenario suite.
    """
    from scipy.signal import butter, lfilter

    rng = np.random.default_rng(seed)
    n = max(1, int(duration * rate))
    t = np.arange(n) / rate
    x = rng.standard_normal(n)
    if voiced:
        pulses = np.zeros(n)
        pulses[:: max(1, rate // 120)] = 8.0
        x = pulses + x
    b, a = butter(2, [250 / (rate / 2), min(3000 / (rate / 2), 0.99)], "band")
    x = lfilter(b, a, x)
    x *= (1 - np.exp(-t / 0.006)) * np.exp(-t / max(duration / 3, 1e-3))
    peak = float(np.max(np.abs(x))) or 1.0
    return (x / peak * 10 ** (dbfs / 20)).astype(np.float32)
