"""Answering-machine beep detection on the call's own audio, sans-I/O.

Why: Twilio's AMD verdict can take seconds after the beep; leaving a voicemail must start right after it, and a
machine may answer calls that did not ask for AMD at all. A beep is a steady narrow-band tone (typically
400-2000 Hz, 0.2-1.5 s); speech is neither steady nor narrow-band (harmonics spread its energy, pitch glides).

How: every 20 ms the last 40 ms are windowed (Hann) and their power measured at frequencies 25 Hz apart over
the beep band with a bank of Goertzel filters (done as one matrix product). A window is *tonal* when one
frequency (with its two neighbours, the window's main lobe) holds most of the window's energy and the level is
above the floor. ``min_duration`` of consecutive tonal windows whose peak stays within ``max_drift`` Hz is a
beep; :meth:`BeepDetector.push` returns a :class:`Beep` when the tone ends (the moment to speak), or
``max_duration`` into a tone that will not stop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Beep", "BeepDetector"]


@dataclass(frozen=True, slots=True)
class Beep:
    start: float
    end: float
    frequency: float


class BeepDetector:
    """Feed 8 kHz float audio in any chunk sizes with :meth:`push`; times are seconds of audio fed."""

    def __init__(
        self,
        rate: int = 8000,
        *,
        low_hz: float = 350.0,
        high_hz: float = 2200.0,
        step_hz: float = 25.0,
        min_duration: float = 0.2,
        max_duration: float = 2.0,
        tonality: float = 0.85,
        min_dbfs: float = -40.0,
        max_drift: float = 50.0,
    ) -> None:
        self.rate = rate
        self.hop = rate // 50  # 20 ms
        self.size = 2 * self.hop  # 40 ms window: 25 Hz resolution
        self.freqs = np.arange(low_hz, high_hz + step_hz / 2, step_hz)
        n = np.arange(self.size)
        self.window = np.hanning(self.size)
        basis = np.exp(-2j * np.pi * np.outer(self.freqs, n) / rate) * self.window
        self._basis = basis.astype(np.complex64)
        # A pure tone's power summed over its main lobe (its bin and both neighbours, 25 Hz apart), per unit of
        # windowed energy: |X(f)|² = (A·Σw/2)², energy = A²/2·Σw², and the neighbours add half again.
        self._scale = float(1.5 * np.sum(self.window) ** 2 / (2 * np.sum(self.window**2)))
        self.min_duration, self.max_duration = min_duration, max_duration
        self.tonality, self.min_power = tonality, 10 ** (min_dbfs / 10)
        self.max_drift = max_drift
        self._buf = np.zeros(self.size, np.float32)
        self._pending = np.zeros(0, np.float32)
        self._fed = 0  # samples
        self._run_start: float | None = None
        self._run_freq = 0.0
        self._run_end = 0.0
        self._reported = False
        self.windows = 0

    def _analyse(self) -> tuple[bool, float]:
        x = self._buf
        power = float(np.mean(x.astype(np.float64) ** 2))
        if power < self.min_power:
            return False, 0.0
        spectrum = np.abs(self._basis @ x) ** 2
        k = int(np.argmax(spectrum))
        lobe = float(spectrum[max(0, k - 1): k + 2].sum())
        energy = float(np.sum((x * self.window) ** 2))
        ratio = lobe / (energy * self._scale) if energy > 0 else 0.0
        return ratio >= self.tonality, float(self.freqs[k])

    def push(self, audio: np.ndarray) -> Beep | None:
        """Audio in; a :class:`Beep` once one has ended (at most one per push)."""
        found: Beep | None = None
        data = np.concatenate([self._pending, np.asarray(audio, np.float32)])
        i = 0
        while len(data) - i >= self.hop:
            hop = data[i: i + self.hop]
            i += self.hop
            self._buf = np.concatenate([self._buf[self.hop:], hop])
            self._fed += self.hop
            self.windows += 1
            t = self._fed / self.rate
            tonal, freq = self._analyse() if self.windows >= 2 else (False, 0.0)
            if tonal and self._run_start is not None and abs(freq - self._run_freq) <= self.max_drift:
                self._run_end = t
                if not self._reported and t - self._run_start >= self.max_duration:
                    self._reported = True
                    found = found or Beep(self._run_start, t, self._run_freq)
                continue
            beep = self._end_run()
            found = found or beep
            if tonal:
                self._run_start, self._run_freq, self._run_end = t - self.size / self.rate, freq, t
        self._pending = data[i:]
        return found

    def _end_run(self) -> Beep | None:
        start, end = self._run_start, self._run_end
        reported = self._reported
        self._run_start, self._reported = None, False
        if start is None or reported:
            return None
        # The run's windows are 40 ms long: the tone itself lasted about one window less than the run spans.
        if end - start - self.size / self.rate >= self.min_duration - 1e-9:
            return Beep(start + self.size / self.rate / 2, end - self.size / self.rate / 2, self._run_freq)
        return None
