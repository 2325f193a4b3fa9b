"""Cancelling an echo path: a partitioned-block frequency-domain NLMS filter (overlap-save), placed at the delay
the correlators found and started from their estimate (:meth:`AdaptiveFilter.seed`). Used by
:class:`~.aec.EchoCanceller`.
"""

from __future__ import annotations

import numpy as np
from numpy.fft import irfft, rfft

__all__ = ["AdaptiveFilter"]


class AdaptiveFilter:
    """Partitioned-block frequency-domain NLMS (overlap-save): ``partitions`` blocks of ``block`` taps, starting
    ``offset`` blocks into the reference's history (the echo delay, rounded down to a block)."""

    def __init__(self, block: int, partitions: int, history: int) -> None:
        self.block = block
        self.partitions = partitions
        bins = block + 1
        rows = history + partitions
        self._rows = rows
        # A ring of the reference's latest ``rows`` blocks (nothing is shifted per block): row ``_head`` is the
        # newest, ``_head + k`` (mod ``rows``) the one ``k`` blocks older.
        self._head = 0
        self._now: np.ndarray | None = None  # the spectra in use for the newest block (made once per block)
        self._X = np.zeros((rows, bins), np.complex128)  # reference spectra
        # The reference frames themselves: their spectra are computed only while the filter is in use (a call
        # without echo never needs them), for every stale row at once when it starts.
        self._frames = np.zeros((rows, 2 * block))
        self._stale = np.zeros(rows, bool)
        self._W = np.zeros((partitions, bins), np.complex128)
        self._power = np.zeros(bins)
        self._zeros = np.zeros(block)
        # Regularisation: every bin counts as at least a -45 dBFS white reference, so a reference rising out of
        # silence (little power in the partitions yet) cannot take a huge step.
        self._delta = partitions * 2 * block * 10 ** (-45 / 10)
        self.offset = 0
        self.active = False  # the filter holds something (seeded, or adapted since it was cleared)
        self._steps = 0
        self._silence = np.zeros(block)

    def push_silence(self) -> None:
        """A block of silent reference (the spectra of zeros, without the FFT)."""
        h = self._head = (self._head - 1) % self._rows
        self._now = None
        self._frames[h] = 0.0
        self._X[h] = 0.0
        self._stale[h] = False

    def push_reference(self, frame: np.ndarray) -> None:
        """The reference's newest ``2 * block`` samples (one new block)."""
        h = self._head = (self._head - 1) % self._rows
        self._now = None
        self._frames[h] = frame
        if self.active:
            self._X[h] = rfft(frame)
            self._stale[h] = False
        else:
            self._stale[h] = True

    def _spectra(self) -> np.ndarray:
        """The reference spectra the filter uses now, newest first (computing any it skipped while idle)."""
        if self._now is not None:
            return self._now
        rows = (self._head + self.offset + np.arange(self.partitions)) % self._rows
        stale = self._stale[rows]
        if stale.any():
            todo = rows[stale]
            self._X[todo] = rfft(self._frames[todo], axis=1)
            self._stale[todo] = False
        self._now = self._X[rows]
        return self._now

    def move(self, offset: int) -> None:
        """Place the filter ``offset`` blocks late; coefficients that still fall inside the span are kept."""
        offset = max(0, min(offset, self._rows - self.partitions))
        shift = offset - self.offset
        if shift == 0:
            return
        p = self.partitions
        W = np.zeros_like(self._W)
        if 0 < shift < p:
            W[: p - shift] = self._W[shift:]
        elif -p < shift < 0:
            W[-shift:] = self._W[: p + shift]
        self._W = W
        self.offset = offset
        self._now = None

    def seed(self, lag: float, gain: float) -> None:
        """Start over from a pure echo: ``gain`` times the reference, ``lag`` samples late (fractional, a windowed
        sinc), the filter placed around it. The correlator's path estimate cancels most of an echo at once; the
        NLMS then learns the rest (dispersion, reverberation, the exact gain)."""
        b, p = self.block, self.partitions
        self.move(max(0, int(lag) - b // 2) // b)
        taps = np.arange(p * b) + self.offset * b
        near = np.abs(taps - lag) <= 8
        w = np.zeros(p * b)
        w[near] = gain * np.sinc(taps[near] - lag) * (0.5 + 0.5 * np.cos(np.pi * (taps[near] - lag) / 9))
        parts = np.zeros((p, 2 * b))
        parts[:, :b] = w.reshape(p, b)
        self._W = rfft(parts, axis=1)
        self.active = True

    def clear(self) -> None:
        self._W[:] = 0.0
        self.active = False

    def estimate(self) -> np.ndarray:
        """The echo estimate for the newest block."""
        if not self.active:  # all zeros: no echo estimate to make (most of a call without echo)
            return self._silence
        X = self._spectra()
        return irfft(np.einsum("pk,pk->k", self._W, X), 2 * self.block)[self.block :]

    def adapt(self, error: np.ndarray, mu: float) -> None:
        """One NLMS step on the newest block's ``error`` (inbound minus estimate), step size ``mu``."""
        if mu <= 0.0:
            return
        b = self.block
        X = self._spectra()
        E = rfft(np.concatenate([self._zeros, error]))
        power = np.einsum("pk,pk->k", X.real, X.real) + np.einsum("pk,pk->k", X.imag, X.imag)
        self._power *= 0.5
        self._power += 0.5 * power
        norm = self._power + self._delta
        W = self._W + np.conj(X) * (E * (mu / norm))
        # The gradient constraint: each partition stays a causal FIR of ``block`` taps (without it, the circular
        # half of the response answers the reference at wrong lags, e.g. before the echo has even come back).
        # Every other block: the half-step of wrap-around in between is too small to matter, the FFTs are not.
        self.active = True
        self._steps += 1
        if self._steps % 2:
            self._W = W
            return
        w = irfft(W, 2 * b, axis=1)
        w[:, b:] = 0.0
        self._W = rfft(w, axis=1)
