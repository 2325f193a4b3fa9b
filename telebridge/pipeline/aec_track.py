"""Following the echo path: what the correlators' peaks mean for the path, the filter and the echo left.

:class:`PathTracker` feeds the two correlators of :class:`~.aec.EchoCanceller` (:class:`~.aec_path.Correlator`,
on the inbound audio and on the canceller's output) hop by hop, at half the rate, and judges their peaks: a peak
counts as an echo only when it is strong, or stays at one lag across hops, or sits where the known path is (two
voices correlate by chance for a moment, never at one lag for long). From the confirmed peaks it keeps the echo
path (delay and gain), the share of the echo the filter leaves, and whether echo is still left in the output;
it places, seeds and clears the :class:`~.aec_filter.AdaptiveFilter` as the path appears, changes and goes. It
also gives the per-block figures the gate's bound and the filter's step are made of (:meth:`raw_echo`,
:meth:`left_bound`, :meth:`step`).
"""

from __future__ import annotations

import math

import numpy as np

from .aec_fft import irfft_into, rfft_into
from .aec_filter import AdaptiveFilter
from .aec_gate import Verdict
from .aec_path import CONTEXT, Correlator, Path, half_rate, lowpass_windows
from .aec_ref import Reference

__all__ = ["QUIET", "PathTracker"]

_TINY = 1e-12
QUIET = 10 ** (-70 / 10)  # mean square below which a hop is silence, whatever the line's floor


class PathTracker:
    """One call's echo path, for blocks of ``block`` samples at ``rate``, judged every ``hop_blocks`` blocks;
    ``history`` blocks of reference span the delay range and ``tail_blocks`` an echo's tail. The thresholds are
    :class:`~.aec.EchoCanceller`'s (which see)."""

    def __init__(self, rate: int, block: int, history: int, tail_blocks: int, hop_blocks: int, filt: AdaptiveFilter,
                 reference: Reference, *, mu: float, detect: float, dominant: float, strong: float,
                 lag_tolerance: float, seed_ncc: float, echo_only: float, line_memory: float) -> None:
        b = block
        self.block = b
        self.history = history
        self.tail_blocks = tail_blocks
        self.hop_blocks = hop_blocks
        self.filter = filt
        self.partitions = filt.partitions
        self.max_lag = history * b
        self.mu = mu
        self.detect = detect
        self.dominant = dominant
        self.strong = strong
        self.lag_tolerance = lag_tolerance
        self.seed_ncc = seed_ncc
        self.echo_only = echo_only
        self._line_forget = math.exp(-hop_blocks * b / rate / line_memory)
        # The correlators run at half the rate (:func:`~.aec_path.half_rate`), on what they need only when a hop
        # is worth correlating (most hops of a call are not): the signals are kept at the full rate until then.
        # The hop's inbound audio and output, after the samples before the hop their half-rate samples depend on:
        hop = hop_blocks * b
        self._sig = np.zeros((2, CONTEXT + hop))
        self._sig_windows = lowpass_windows(self._sig)
        self._hop_active = False  # some block of this hop had a reference in the delay range
        self.span = self.reference_span(b, history, hop_blocks)
        # The reference at the full rate (the canceller pushes it): the correlators' half-rate reference of the delay
        # range is made of its newest ``span`` samples, when a hop is correlated.
        self.ref = reference
        if reference.span < self.span:
            raise ValueError(f"the reference keeps {reference.span} samples, the correlators need {self.span}")
        self._ref_windows = lowpass_windows(reference.buf)
        self._far2_pos = 0  # ``ref.pos`` when the half-rate reference was last brought up to date
        hop2 = hop // 2
        self.near_corr = Correlator(hop2, self.max_lag // 2)
        self.out_corr = Correlator(hop2, self.max_lag // 2)
        # What the correlators transform, zero-padded, one row each (so one call transforms all three): the
        # reference of the whole delay range, the hop's inbound audio and its output, at half the rate.
        nfft, lags = self.near_corr.nfft, self.max_lag // 2
        self._rows = np.zeros((3, nfft))
        self._far2 = self._rows[0, : hop2 + lags]
        self._sig2 = self._rows[1:, :hop2]
        self._near2, self._out2 = self._sig2
        # Work arrays of the hop's correlations (nothing is allocated per hop).
        self._specs = np.zeros((3, nfft // 2 + 1), np.complex128)
        self._corr = np.zeros((2, nfft))
        self._sq = np.zeros(len(self._far2))
        self._cum = np.zeros(len(self._far2) + 1)  # (its first element stays 0)
        self._energy = np.zeros(lags + 1)
        # Mean square of the reference per block, newest first (a list: a few dozen numbers, read a few at a time).
        self.far_blocks = [0.0] * (history + tail_blocks + 2)
        # The echo path (inbound correlator): lag in samples, and the echo's power gain with its tail.
        self.path = Path()
        self.echo_gain = 0.0
        self.line_gain = 0.0  # the loudest echo gain of the last few seconds (``line_memory``), slowly forgotten
        self.unsure = 0  # blocks left whose echo may come from a reference the phone did not play as we think
        self.share = 1.0  # of the echo, what the filter leaves in the output (power)
        self._left_e = self._echo_e = 0.0  # echo left in the output / echo in, over the latest hops of pure echo
        self.state = Verdict.PASS  # ECHO while the output still correlates with the reference
        self._left = Path()  # the echo left in the output (output correlator), lag in blocks
        self.hop_out = 0.0  # the loudest output block of the hop so far
        self._hop_near = 0.0  # inbound energy over the hop (sum of the blocks' mean squares)
        self._hop_direct = 0.0  # the same for the echo the path predicts from the reference at its delay
        self._absent_hops = 0  # hops in a row whose inbound audio was far below that prediction
        self._worse_hops = 0  # hops in a row whose output was louder than the inbound audio
        self.pending = False  # the latest hop saw a correlation peak not yet confirmed as an echo
        self.seeds = 0  # times the filter started over from the correlator's path

    @staticmethod
    def reference_span(block: int, history: int, hop_blocks: int) -> int:
        """The full-rate reference (samples) the correlators look back into: the hop and the delay range, after the
        samples their half-rate samples depend on."""
        return (hop_blocks + history) * block + CONTEXT

    # --- per block ------------------------------------------------------------------------------------------
    def push_far(self, ms: float) -> float:
        """The reference's newest block has mean square ``ms``: the loudest block in the delay range."""
        fb = self.far_blocks
        fb.pop()
        fb.insert(0, ms)
        return max(fb[: self.history])

    def push_hop(self, k: int, d: np.ndarray, e: np.ndarray) -> None:
        """Block ``k`` of the hop: inbound ``d``, output ``e`` (the reference is in :attr:`ref`; the hop ends with
        :meth:`correlate` or :meth:`skip_hop`)."""
        b = self.block
        at = CONTEXT + k * b
        sig = self._sig
        sig[0, at : at + b] = d
        sig[1, at : at + b] = e
        self._hop_active = True

    def push_idle(self, k: int, d: np.ndarray) -> None:
        """Block ``k`` of the hop without reference in the delay range: the output is the input."""
        self._hop_active = k > 0 and self._hop_active
        self.unsure = 0  # (no reference in the whole delay range: no echo of it can come back)
        if k == self.hop_blocks - 1 and not self._hop_active:
            # A hop without reference: only the start of the next hop's half-rate samples depends on this one.
            self._sig[:, :CONTEXT] = d[-CONTEXT:]
            self.state = Verdict.PASS
            return
        b = self.block
        at = CONTEXT + k * b
        self._sig[:, at : at + b] = d  # (the output is the input)
        if k == self.hop_blocks - 1:
            self.skip_hop()

    def note(self, first: bool, out_ms: float, near_ms: float) -> None:
        """The newest block's output and inbound mean squares, for the hop's figures (``first`` block of it)."""
        self.hop_out = out_ms if first else max(self.hop_out, out_ms)
        self._hop_near = near_ms if first else self._hop_near + near_ms
        direct = self._direct_echo() if self.echo_gain > 0.0 else 0.0
        self._hop_direct = direct if first else self._hop_direct + direct

    def skip_hop(self) -> None:
        """The hop (some block of which had a reference) ended, with nothing to correlate (the reference below
        its floor over the whole delay range)."""
        self._halve(False)
        self.state = Verdict.PASS

    def _halve(self, signals: bool) -> None:
        """The hop just completed (some block of it had a reference). ``signals``: it is correlated now -- the
        hop's inbound audio and output, and the reference over the delay range (as far as it changed since the last
        hop that was), at half the rate."""
        sig = self._sig
        if signals:
            half_rate(self._sig_windows, 0, len(self._near2), out=self._sig2)
            ref = self.ref
            missing = ref.pos - self._far2_pos
            if missing:
                self._far2_pos = ref.pos
                far2 = self._far2
                new = min(missing // 2, len(far2))
                if new < len(far2):
                    far2[:-new] = far2[new:]
                half_rate(self._ref_windows, ref.end - 2 * new - CONTEXT, new, out=far2[-new:])
        sig[:, :CONTEXT] = sig[:, -CONTEXT:]

    def step(self, near_ms: float, echo_ms: float, raw: float, out_ms: float, floor: float) -> float:
        """Full while the inbound audio is (explained or explainable) echo, small while the caller talks over it:
        the share of the inbound audio that the echo path's model (or, once learnt, the filter) accounts for
        (``raw``: :meth:`raw_echo` now) -- and smaller still when the output is louder than the echo the filter is
        known to leave (:attr:`share`) could make it (``floor``: the output's noise floor): the caller's voice,
        mixed with the echo at a like level (the start or end of a word), is no echo to learn, and learning it
        spreads the filter over many lags (the echo it leaves then comes back in the next reply). A filter that
        really went wrong raises :attr:`share` (measured on hops of pure echo) and so its own step again."""
        if raw <= 0.0:
            return 0.0  # no echo path known: nothing to learn (a seed starts the filter when one is found)
        explained = min(max(echo_ms, raw), 2 * raw)
        expected = 4.0 * (self.share * max(raw, echo_ms) + floor)
        return self.mu * min(1.0, explained / (near_ms + _TINY)) * min(1.0, expected / (out_ms + _TINY))

    def raw_echo(self) -> float:
        """The echo the path would bring back in the newest block (mean square, before cancelling)."""
        if self.echo_gain <= 0.0:
            return 0.0
        lag = int(self.path.lag) // self.block
        span = self.far_blocks[max(lag - 1, 0) : lag + self.tail_blocks + 1]
        return self.echo_gain * max(span) if span else 0.0

    def _direct_echo(self) -> float:
        """The echo the path would bring back in the newest block from the reference at its very delay."""
        if self.echo_gain <= 0.0:
            return 0.0
        return self.echo_gain * self.far_blocks[int(self.path.lag) // self.block]

    def left_bound(self) -> float:
        """The echo the output correlator still finds (mean square), while it finds any."""
        if self.state is not Verdict.ECHO:
            return 0.0
        lag = int(self._left.lag)
        span = self.far_blocks[max(lag - 1, 0) : lag + 2]
        return self._left.gain**2 * max(span) if span else 0.0

    # --- per hop --------------------------------------------------------------------------------------------
    def _confirmed(self, corr: Correlator) -> bool:
        """Is the short sum's peak an echo? When it is strong, or has stayed at one lag for as many hops as the
        short sum spans (two sums with no hop in common agree), or sits at the known path's lag. Never over a
        single hop of sound. Two voices can correlate by chance for a moment (the more so when their pitch is alike,
        and a word the agent also said can match for its whole length), never at one lag for long: a peak that is
        merely weak and new is no first path, however a longer sum agrees (a caller talking over the agent fills
        both sums alike)."""
        found = corr.short
        if found.ncc < self.detect or corr.heard(corr.short_hops) < 2:
            return False  # a peak over a single hop of sound is no evidence (a click, a word's first sound)
        if self.echo_gain > 0.0 and abs(2 * found.lag - self.path.lag) <= 2 * self.lag_tolerance:
            return True
        return found.ncc >= self.strong or corr.steady >= corr.short_hops

    def correlate(self, floor: float) -> None:
        """The hop just ended (with reference in the delay range above its floor); ``floor``: the output's noise
        floor. (Its half-rate signals hold what was correlated last: only a loud hop is correlated.)"""
        # Only a hop with sound above the noise floor is worth correlating (most hops of a call without echo
        # are not): the others count as silence, without an FFT.
        loud = max(4 * floor, QUIET)  # (a clean line's floor is μ-law's idle code: next to nothing)
        near_loud = self._hop_near / self.hop_blocks > loud
        out_loud = self.hop_out > loud
        self._halve(near_loud or out_loud)
        near2, out2 = self._near2, self._out2
        near_y = float(near2 @ near2) if near_loud else None  # (the hop's energies at half the rate)
        out_y = float(out2 @ out2) if out_loud else None
        if near_loud or out_loud:
            half_lags = self.max_lag // 2
            nfft = self.near_corr.nfft
            # The spectra of the reference and of the loud ones, in one call.
            rows = slice(0, 3) if near_loud and out_loud else slice(0, 2) if near_loud else slice(0, 3, 2)
            specs = rfft_into(self._rows[rows], nfft, self._specs[rows])
            spec, sig_spec = specs[0], specs[1:]
            ref = self._far2
            cum = self._cum
            np.cumsum(np.multiply(ref, ref, out=self._sq), out=cum[1:])
            hop = len(self._near2)
            energy = np.subtract(cum[hop : hop + half_lags + 1], cum[: half_lags + 1], out=self._energy)[::-1]
            # Their cross-correlations with the reference (the two at once).
            np.conjugate(sig_spec, out=sig_spec)
            sig_spec *= spec
            corr = irfft_into(sig_spec, nfft, self._corr[: len(sig_spec)])
            if near_loud:
                self.near_corr.push(near2, spec, energy, corr[0, : half_lags + 1], near_y)
            if out_loud:
                self.out_corr.push(out2, spec, energy, corr[-1, : half_lags + 1], out_y)
        if not near_loud:
            self.near_corr.push_quiet()
        if not out_loud:
            self.out_corr.push_quiet()
        near, left = self.near_corr, self.out_corr.short
        fresh = near.short
        seen = self._confirmed(self.near_corr)
        left_seen = self._confirmed(self.out_corr)
        self.pending = (fresh.ncc >= self.detect and not seen) or (left.ncc >= self.detect and not left_seen)
        # Where the echo is: the inbound correlator's confirmed peak.
        if seen:
            self.path = Path(2 * fresh.lag, fresh.ncc, fresh.gain)
            # (Measured on hops that held sound: a quiet hop adds nothing to the sums, and no gain of its own.)
            if near_loud and fresh.ncc >= self.dominant:  # mostly echo: measure the path and the filter
                # (The newest hop's gain, or the short sum's when that is more: a hop whose echo comes back at
                # another lag than the reference's, an underrun at the phone, is no measure of the path.)
                gain = max(near.hop_gain(fresh.lag), fresh.gain) ** 2 / max(fresh.ncc**2, 0.5)
                self.echo_gain = max(gain, self.echo_gain) if self.unsure else gain
                self.line_gain = max(self.line_gain, gain)
                out_e = float(out2 @ out2) if out_y is None else out_y
                hop_share = out_e / (near_y + _TINY)
                echo_only = near.hop_ncc(fresh.lag)  # how much of the newest hop alone is the echo
                if left_seen:  # the output still holds echo: cancelling got worse (a new path): at once
                    self.share = min(1.0, max(hop_share, 0.5 * self.share + 0.5 * hop_share))
                elif echo_only >= self.echo_only:
                    # The hop is the echo through and through (no caller in it): whatever the output holds beyond
                    # the hop's little else is echo the filter left, even when it correlates at no one lag (a
                    # filter that adapted over the caller's voice leaves its echo spread over many lags): at once.
                    self._left_e = 0.5 * self._left_e + max(out_e - (1.0 - echo_only**2) * near_y, 0.0)
                    self._echo_e = 0.5 * self._echo_e + echo_only**2 * near_y
                    left_share = self._left_e / (self._echo_e + _TINY)
                    fall = max(min(self.share, 0.5 * self.share + 0.5 * hop_share), 1e-3)
                    self.share = min(1.0, max(fall, left_share))
                else:  # what the output holds is not echo (the caller, noise): the share can only fall
                    self.share = max(min(self.share, 0.5 * self.share + 0.5 * hop_share), 1e-3)
            elif near_loud and self.echo_gain == 0.0:  # a first sight, maybe over the caller
                self.echo_gain = 1.25 * near.hop_gain(fresh.lag) ** 2
            share_left = self.out_corr.short_energy / (near.short_energy + _TINY)
            if (near_loud and left_seen and left.ncc >= self.seed_ncc and fresh.ncc >= self.seed_ncc
                    and share_left > 0.25 and 1.0 - fresh.ncc**2 < 0.5 * share_left):
                # Much echo left (the filter is far behind: a new path), and one lag alone explains most of it:
                # start over from that lag.
                self.filter.seed(2 * fresh.lag, near.hop_gain(fresh.lag))
                self.out_corr.clear_short()
                left, left_seen = self.out_corr.short, False
                self.share = max(self.share, 1.0 - fresh.ncc**2)
                self.seeds += 1
            else:
                lag, start = self.path.lag, self.filter.offset * self.block
                if not (start + self.block // 2 <= lag < start + (self.partitions - 1) * self.block):
                    self.filter.move(max(0, int(lag) - self.block // 2) // self.block)
        else:
            if left_seen and left.ncc >= self.seed_ncc and fresh.ncc < self.detect / 2 and near_loud:
                self.filter.clear()  # the filter makes an echo the line no longer has: the path is gone
                self.out_corr.clear_short()
                left, left_seen = self.out_corr.short, False
        # The filter adds more than it takes away, hop after hop: it has gone wrong; start over. (Over one hop
        # it is only what a converged filter leaves when the echo dips while the reference around it is loud.)
        worse = out_loud and out_y > 2 * (float(near2 @ near2) if near_y is None else near_y) + _TINY
        self._worse_hops = self._worse_hops + 1 if worse else 0
        if self._worse_hops >= 3:
            self.filter.clear()
            self.out_corr.clear_short()
            left, left_seen = self.out_corr.short, False
            self._worse_hops = 0
        # The inbound audio far quieter than the echo the path predicts, hop after hop: the echo has gone.
        if self.unsure:  # the echo is not where a misplaced reference predicts it: that says nothing of the path
            self._absent_hops = 0
        elif self._hop_direct > 4 * self.hop_blocks * floor:  # an echo worth hearing was due
            absent = self._hop_near < 0.01 * self._hop_direct  # and the inbound audio is 20 dB below it
            self._absent_hops = self._absent_hops + 1 if absent else 0
        if self._absent_hops >= 5:
            self.echo_gain *= 0.5
            if self.echo_gain < 1e-4:
                self.echo_gain = 0.0
                self.filter.clear()
                self.out_corr.clear_short()
                left, left_seen = self.out_corr.short, False
        self.line_gain *= self._line_forget
        if left_seen:
            self.state = Verdict.ECHO
            self._left = Path((2 * left.lag) // self.block, left.ncc, self.out_corr.hop_gain(left.lag))
        else:
            self.state = Verdict.PASS
