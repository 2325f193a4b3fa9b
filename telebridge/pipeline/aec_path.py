"""Finding an echo path: where (and whether) the reference shows up in a signal.

:class:`Correlator` cross-correlates the newest hop of a signal with the reference at every lag of the delay range
(one FFT cross-correlation; the caller pre-emphasises both so that peaks are sharp) and sums the last few hops
(*is this sound an echo right now?*). A peak (:class:`Path`) gives the delay (interpolated between samples), the
normalised correlation (the share of the signal's amplitude the reference explains there through an echo path
no louder than :data:`MAX_GAIN`) and the path's gain. Used by
:class:`~.aec.EchoCanceller` on its input and on its output. :func:`half_rate` makes what they see of a signal (from
its full-rate samples, whenever a hop is correlated).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.fft import irfft, rfft
from numpy.lib.stride_tricks import sliding_window_view
from scipy.fft import next_fast_len
from scipy.signal import firwin

__all__ = ["CONTEXT", "Correlator", "Path", "DETECT_FLOOR", "MAX_GAIN", "cross_correlate", "half_rate",
           "lowpass_windows"]

_TINY = 1e-12
DETECT_FLOOR = 0.25  # a correlation peak this weak is no sighting at all
MAX_GAIN = 0.5  # no echo comes back louder than 6 dB down
PRE_EMPHASIS = 0.9
_sum = np.add.reduce  # (the ufunc itself: ``ndarray.sum`` adds a Python call per use)


class Path(NamedTuple):
    """What a correlator says: ``lag`` (samples at its rate, fractional), ``ncc`` (normalised correlation, 0-1),
    ``gain`` (amplitude ratio, least squares at that lag)."""

    lag: float = 0.0
    ncc: float = 0.0
    gain: float = 0.0


_NO_PATH = Path()


LOWPASS = firwin(23, 0.45)[::-1].copy()  # (reversed: a window's dot product with it is the filter's output)
CONTEXT = len(LOWPASS) + 1  # full-rate samples before a stretch that its half-rate samples depend on


def lowpass_windows(x: np.ndarray) -> np.ndarray:
    """The low-pass filter's windows of ``x`` at every sample, along the last axis: a view, to be made once per
    buffer (making it costs more than filtering a hop) and handed to :func:`half_rate`."""
    return sliding_window_view(x, len(LOWPASS), axis=-1)


def half_rate(windows: np.ndarray, start: int, n: int, out: np.ndarray | None = None) -> np.ndarray:
    """What the correlators see of a signal: low-passed (an echo of speech is plain enough below 2 kHz), at half
    the rate and pre-emphasised (so that correlation peaks are sharp) -- ``n`` samples, of the ``2 * n`` samples
    that begin :data:`CONTEXT` samples after ``start`` in the buffer ``windows`` is of (:func:`lowpass_windows`).
    A signal's half-rate samples depend only on its own samples, so a stretch can be made whenever it is needed,
    from the full-rate signal, and comes out the same whatever was made before."""
    # (One more low-passed sample than the stretch's: the one before it, for the pre-emphasis.)
    low = windows[..., start : start + 2 * n + 1 : 2, :] @ LOWPASS
    return np.subtract(low[..., 1:], low[..., :-1] * PRE_EMPHASIS, out=out)


def cross_correlate(sig: np.ndarray, ref_spec: np.ndarray, nfft: int, lags: int) -> np.ndarray:
    """``corr[..., k] = sum_i sig[..., i] * ref[i + k]`` for ``k`` in ``0..lags`` (the reference lagging the
    signal by ``lags - k`` samples); ``sig`` may hold several signals (rows), transformed in one call each way."""
    return irfft(np.conj(rfft(sig, nfft)) * ref_spec, nfft)[..., : lags + 1]


class Correlator:
    """Cross-correlation of a signal with the reference over lags ``0..max_lag`` (samples), fed hop by hop."""

    def __init__(self, hop: int, max_lag: int, *, short_hops: int = 3) -> None:
        self.hop = hop
        self.max_lag = max_lag
        self.nfft = next_fast_len(hop + max_lag, real=True)
        self._ring_c = np.zeros((short_hops, max_lag + 1))
        self._ring_x = np.zeros((short_hops, max_lag + 1))
        self._ring_y = np.zeros(short_hops)
        self._i = 0
        self.short = Path()
        self.short_hops = short_hops
        self.steady = 0  # hops in a row whose short-sum peak stayed at one lag
        self._heard: list[bool] = [False] * short_hops  # which of the latest hops held a signal (newest last)
        self._clear = [True] * short_hops  # which of the ring's hops hold zeros only (nothing to clear)
        # Work arrays for the peak search (nothing is allocated per hop).
        self._sum_c = np.zeros(max_lag + 1)
        self._sum_x = np.zeros(max_lag + 1)
        self._gain = np.zeros(max_lag + 1)
        self._ncc = np.zeros(max_lag + 1)

    def push(self, sig: np.ndarray, ref_spec: np.ndarray, ref_energy: np.ndarray,
             corr: np.ndarray | None = None, energy: float | None = None) -> None:
        """``sig``: the newest ``hop`` samples; ``ref_spec``: rfft (``nfft``) of the reference's newest
        ``hop + max_lag`` samples (ending at the same instant); ``ref_energy[lag]``: the energy of the
        reference under ``sig`` at each lag. The last two are shared by a canceller's correlators; ``corr``, the
        cross-correlation itself when the caller computed it (:func:`cross_correlate`, several signals at once),
        and ``energy``, ``sig @ sig``, when it has it."""
        if corr is None:
            corr = cross_correlate(sig, ref_spec, self.nfft, self.max_lag)
        y = float(sig @ sig) if energy is None else energy
        self._heard = self._heard[1:] + [True]
        i = self._i
        self._clear[i] = False
        self._ring_c[i], self._ring_x[i], self._ring_y[i] = corr[::-1], ref_energy, y
        self._i = (i + 1) % len(self._ring_y)
        previous = self.short
        self.short = self._peak_of_sums(float(_sum(self._ring_y)))
        same = previous.ncc >= DETECT_FLOOR and abs(self.short.lag - previous.lag) <= 1.0
        self.steady = self.steady + 1 if same and self.short.ncc >= DETECT_FLOOR else 0

    def push_quiet(self) -> None:
        """A hop with nothing worth correlating (the signal at the noise floor): it counts as silence."""
        self._heard = self._heard[1:] + [False]
        i = self._i
        if not self._clear[i]:
            self._ring_c[i], self._ring_x[i], self._ring_y[i] = 0.0, 0.0, 0.0
            self._clear[i] = True
        self._i = (i + 1) % len(self._ring_y)
        self.steady = 0
        if all(self._clear):  # (the short sum holds quiet hops only: no peak; most hops of a call without echo)
            self.short = _NO_PATH
            return
        ys = float(_sum(self._ring_y))
        self.short = self._peak_of_sums(ys) if ys > 0 else Path()

    def heard(self, hops: int) -> int:
        """How many of the latest ``hops`` hops held a signal (a peak over one or two is no evidence yet)."""
        return sum(self._heard[-hops:])

    def hop_gain(self, lag: float) -> float:
        """The path's gain at ``lag`` in the newest hop alone (the sums may still hold hops without echo)."""
        i, k = (self._i - 1) % len(self._ring_y), int(round(lag))
        c, x = self._ring_c[i], self._ring_x[i]
        return min(float(max(c[k], 0.0) / (x[k] + _TINY)), MAX_GAIN)

    def hop_ncc(self, lag: float) -> float:
        """The normalised correlation at ``lag`` (± a sample) in the newest hop alone: how much of that hop is
        the reference through an echo path there (0 for a quiet hop)."""
        i, k = (self._i - 1) % len(self._ring_y), int(round(lag))
        y = self._ring_y[i]
        if y <= _TINY:
            return 0.0
        ks = slice(max(k - 1, 0), k + 2)
        c, x = self._ring_c[i, ks], self._ring_x[i, ks]
        gain = np.minimum(np.maximum(c, 0.0) / (x + _TINY), MAX_GAIN)
        return float((gain * np.sqrt(x / y)).max())

    def clear_short(self) -> None:
        """Forget the short sum (what it measured no longer holds, e.g. the filter it judged was replaced)."""
        self._ring_c[:] = 0.0
        self._ring_x[:] = 0.0
        self._ring_y[:] = 0.0
        self._clear = [True] * len(self._clear)
        self.short = Path()
        self.steady = 0

    @property
    def short_energy(self) -> float:
        return float(_sum(self._ring_y))

    def _peak_of_sums(self, y: float) -> Path:
        """The peak of the short sum (``y``: the signal's energy in it)."""
        c = _sum(self._ring_c, axis=0, out=self._sum_c)
        x = _sum(self._ring_x, axis=0, out=self._sum_x)
        return self._peak(c, x, y)

    def _peak(self, c: np.ndarray, x: np.ndarray, y: float) -> Path:
        if y <= _TINY:
            return Path()
        # The share of the signal's amplitude an echo at each lag explains: ``gain * sqrt(x / y)`` (the normalised
        # correlation), with the gain capped at :data:`MAX_GAIN`: a lag whose reference is too faint to explain
        # that much through a real echo path (the caller's voice correlating by chance with a quiet reference,
        # or with the few samples of it at the edge of a silence) explains only what the loudest echo would.
        gain, ncc = self._gain, self._ncc
        np.divide(c, np.add(x, _TINY, out=gain), out=gain)
        np.minimum(gain, MAX_GAIN, out=gain)
        np.sqrt(np.divide(x, y, out=ncc), out=ncc)
        ncc *= gain
        k = int(ncc.argmax())
        lag = float(k)
        if 0 < k < len(ncc) - 1:  # parabolic interpolation: the peak between samples
            a, m, b = ncc[k - 1], ncc[k], ncc[k + 1]
            den = a - 2 * m + b
            if den < 0:
                lag += max(-0.5, min(0.5, 0.5 * (a - b) / den))
        return Path(lag, float(max(ncc[k], 0.0)), float(max(gain[k], 0.0)))
