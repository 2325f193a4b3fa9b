"""The echo on the caller's line: what the caller hears comes back to the server, late and quieter.

:class:`EchoLine` keeps the audio the caller heard and, per 20 ms frame, returns its echo through the current
:class:`~.script.LineEcho` (delay, gain, reverberation tail, clock drift). The path can change at any moment
(:meth:`EchoLine.set`): the new path applies to what is still in the air, as when a phone goes on speaker.
"""

from __future__ import annotations

import numpy as np

from .constants import FRAME, RATE, FloatArray
from .script import LineEcho

_SINC = 8  # half-length of the fractional-delay interpolator
_HISTORY = 3 * RATE  # seconds of heard audio kept: the longest delay (2 s) plus a tail and drift


class EchoLine:
    def __init__(self, echo: LineEcho | None = None) -> None:
        self._heard = np.zeros(_HISTORY + FRAME, np.float32)
        self._n = 0  # samples heard so far
        self.echo: LineEcho | None = None
        self._h = np.zeros(1, np.float32)
        self._since = 0
        self.set(echo)

    def set(self, echo: LineEcho | None) -> None:
        self.echo = echo
        self._h = echo.impulse() if echo is not None else np.zeros(1, np.float32)
        self._since = self._n

    def frame(self, heard: FloatArray) -> FloatArray:
        """The echo during the frame in which the caller heard ``heard`` (``FRAME`` samples)."""
        buf = self._heard
        buf[:-FRAME] = buf[FRAME:]
        buf[-FRAME:] = heard
        self._n += FRAME
        echo = self.echo
        if echo is None:
            return np.zeros(FRAME, np.float32)
        # Delay of each output sample (in samples), creeping with the clock drift since the path appeared.
        t = np.arange(self._n - FRAME, self._n, dtype=np.float64)
        delay = echo.delay * RATE + (t - self._since) * echo.drift_ppm * 1e-6
        pos = (len(buf) - FRAME) + np.arange(FRAME) - delay  # index into buf of each output's direct echo
        lo = int(np.floor(pos.min())) - len(self._h) + 1
        hi = int(np.ceil(pos.max())) + 1
        lo_c, hi_c = max(lo, 0), max(min(hi, len(buf)), 0)
        src = np.zeros(hi - lo + 1, np.float32)
        if hi_c > lo_c:
            src[lo_c - lo : hi_c - lo] = buf[lo_c:hi_c]
        filtered = np.convolve(src, self._h)[: len(src)]  # filtered[i]: echo whose direct path is src[i]
        whole = np.floor(pos)
        if np.all(whole == pos):  # a whole number of samples late: no interpolation
            return filtered[(pos - lo).astype(np.int64)].astype(np.float32)
        # A fractional delay (the drifting clock): windowed-sinc interpolation, flat across the phone band.
        k = np.arange(-_SINC + 1, _SINC + 1)
        idx = (whole - lo).astype(np.int64)[:, None] + k[None, :]
        frac = (pos - whole)[:, None]
        kernel = np.sinc(k[None, :] - frac) * (0.5 + 0.5 * np.cos(np.pi * (k[None, :] - frac) / _SINC))
        padded = np.concatenate([np.zeros(_SINC), filtered, np.zeros(_SINC)])
        return (padded[idx + _SINC] * kernel).sum(axis=1).astype(np.float32)
