"""Cancelling an echo path: a partitioned-block frequency-domain NLMS filter (overlap-save), placed at the delay
the correlators found and started from their estimate (:meth:`AdaptiveFilter.seed`). Used by
:class:`~.aec.EchoCanceller`.
"""

from __future__ import annotations

import numpy as np
from numpy.fft import rfft

from .aec_fft import irfft_into, rfft_into
from .aec_ref import Reference

__all__ = ["AdaptiveFilter"]


class AdaptiveFilter:
    """Partitioned-block frequency-domain NLMS (overlap-save): ``partitions`` blocks of ``block`` taps, starting
    ``offset`` blocks into the reference's history (the echo delay, rounded down to a block). The reference itself is
    ``reference`` (pushed there before each block's :meth:`push_reference` or :meth:`push_silence`)."""

    def __init__(self, block: int, partitions: int, history: int, reference: Reference) -> None:
        self.block = block
        self.partitions = partitions
        bins = block + 1
        rows = history + partitions
        self._rows = rows
        self.span = self.reference_span(block, partitions, history)
        if reference.span < self.span:
            raise ValueError(f"the reference keeps {reference.span} samples, the filter needs {self.span}")
        self._ref = reference
        # A ring of the reference's latest ``rows`` blocks (nothing is shifted per block): row ``_head`` is the
        # newest, ``_head + k`` (mod ``rows``) the one ``k`` blocks older. The spectra are kept twice over (row
        # ``r`` also at ``r + rows``), so that the ``partitions`` rows the filter uses are always one slice, a view.
        self._head = 0
        self._now: np.ndarray | None = None  # the spectra in use for the newest block (a view, found once per block)
        self._X = np.zeros((2 * rows, bins), np.complex128)  # reference spectra
        # The frames' spectra are computed only while the filter is in use (a call without echo never needs them),
        # for every stale row at once when it starts, from the reference (a row ``k`` blocks old: the two blocks
        # that end ``k`` blocks before the newest).
        self._frame = np.arange(2 * block)
        self._stale = np.zeros(2 * rows, bool)  # (twice over too)
        self._silent = rows  # the latest blocks of silent reference in a row (all of the ring: nothing to clear)
        self._W = np.zeros((partitions, bins), np.complex128)
        self._power = np.zeros(bins)
        # Regularisation: every bin counts as at least a -45 dBFS white reference, so a reference rising out of
        # silence (little power in the partitions yet) cannot take a huge step.
        self._delta = partitions * 2 * block * 10 ** (-45 / 10)
        self.offset = 0
        self.active = False  # the filter holds something (seeded, or adapted since it was cleared)
        self._steps = 0
        self._silence = np.zeros(block)
        # Work arrays, one per intermediate of a block (nothing is allocated per block).
        self._acc = np.zeros(bins, np.complex128)
        self._y = np.zeros(2 * block)
        self._e = np.zeros(2 * block)  # the error, zero-padded: its first half stays zero
        self._E = np.zeros(bins, np.complex128)
        self._pw = np.zeros(bins)
        self._pw2 = np.zeros(bins)
        self._sq = np.zeros((partitions, bins))
        self._norm = np.zeros(bins)
        self._step = np.zeros(bins, np.complex128)
        self._grad = np.zeros((partitions, bins), np.complex128)
        self._w = np.zeros((partitions, 2 * block))

    @staticmethod
    def reference_span(block: int, partitions: int, history: int) -> int:
        """The reference (samples) the filter's frames are made of: a frame (two blocks) per row of its history."""
        return (history + partitions + 1) * block

    def push_silence(self, blocks: int = 1) -> None:
        """``blocks`` blocks of silent reference (the spectra of zeros, without the FFT)."""
        rows = self._rows
        while blocks > 0 and self._silent < rows:
            self._push_silence()
            blocks -= 1
        if blocks > 0:  # the whole ring is silence already: its rows are zeros
            self._head = (self._head - blocks) % rows
            self._now = None

    def _push_silence(self) -> None:
        rows = self._rows
        h = self._head = (self._head - 1) % rows
        self._now = None
        if self._silent >= rows:  # the whole ring is silence already: this row is zeros
            return
        self._silent += 1
        self._X[h] = 0.0
        self._X[h + rows] = 0.0
        self._stale[h] = self._stale[h + rows] = False

    def push_reference(self) -> None:
        """The reference has a new block (its newest ``2 * block`` samples are the newest frame)."""
        rows = self._rows
        h = self._head = (self._head - 1) % rows
        self._now = None
        self._silent = 0
        if self.active:
            X = self._X
            rfft_into(self._ref.last(2 * self.block), 2 * self.block, X[h])
            X[h + rows] = X[h]
            self._stale[h] = self._stale[h + rows] = False
        else:
            self._stale[h] = self._stale[h + rows] = True

    def _spectra(self) -> np.ndarray:
        """The reference spectra the filter uses now, newest first (computing any it skipped while idle)."""
        if self._now is not None:
            return self._now
        first = self._head + self.offset
        last = first + self.partitions
        if np.count_nonzero(self._stale[first:last]):
            rows = self._rows
            todo = np.arange(first, last) % rows
            todo = todo[self._stale[todo]]
            ref, b = self._ref, self.block
            starts = ref.end - ((todo - self._head) % rows + 2) * b  # (each row's frame in the reference)
            spectra = rfft(ref.buf[starts[:, None] + self._frame], axis=1)
            self._X[todo] = spectra
            self._X[todo + rows] = spectra
            self._stale[todo] = self._stale[todo + rows] = False
        self._now = self._X[first:last]
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
        """The echo estimate for the newest block (valid until the next block: the filter reuses the array)."""
        if not self.active:  # all zeros: no echo estimate to make (most of a call without echo)
            return self._silence
        X = self._spectra()
        np.einsum("pk,pk->k", self._W, X, out=self._acc)
        return irfft_into(self._acc, 2 * self.block, self._y)[self.block :]

    def adapt(self, error: np.ndarray, mu: float) -> None:
        """One NLMS step on the newest block's ``error`` (inbound minus estimate), step size ``mu``."""
        if mu <= 0.0:
            return
        b = self.block
        X = self._spectra()
        self._e[b:] = error
        E = rfft_into(self._e, 2 * b, self._E)
        power, im, sq = self._pw, self._pw2, self._sq
        np.add.reduce(np.multiply(X.real, X.real, out=sq), axis=0, out=power)  # (the sum over the partitions)
        power += np.add.reduce(np.multiply(X.imag, X.imag, out=sq), axis=0, out=im)
        self._power *= 0.5
        power *= 0.5
        self._power += power
        norm = np.add(self._power, self._delta, out=self._norm)
        np.divide(mu, norm, out=norm)
        step = np.multiply(E, norm, out=self._step)
        grad = np.conjugate(X, out=self._grad)
        grad *= step
        W = self._W
        W += grad
        # The gradient constraint: each partition stays a causal FIR of ``block`` taps (without it, the circular
        # half of the response answers the reference at wrong lags, e.g. before the echo has even come back).
        # Every other block: the half-step of wrap-around in between is too small to matter, the FFTs are not.
        self.active = True
        self._steps += 1
        if self._steps % 2:
            return
        w = irfft_into(W, 2 * b, self._w)
        w[:, b:] = 0.0
        rfft_into(w, 2 * b, W)
