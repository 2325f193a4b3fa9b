"""An echo canceller for the inbound phone audio: what the caller heard (the reference) is subtracted from what
comes back, through an echo path that is found, followed and re-found as it appears, changes and disappears.

Theory of operation
-------------------
Both signals are on one clock: the inbound audio, and the agent's audio *as the caller heard it* at the same
instants (placed by the mark ledger, see :class:`~.echo.PlayoutTrack`). The echo is the reference through an
unknown path: a delay (40-400 ms on phone lines), a gain (12-30 dB down) and a short response (a hybrid's
dispersion, a room's reverberation), changing whenever the caller switches to the speakerphone or back.

Three parts, plain numpy on blocks of 20 ms, no I/O and no clock:

* :class:`~.aec_path.Correlator` finds the path: every hop (a few blocks) it correlates the newest audio with
  the reference at every lag of the delay range (one FFT cross-correlation at half the rate, both signals
  pre-emphasised so that the peaks are sharp), summed over the last few hops (*is this sound an echo right
  now?*). A peak gives the delay, the normalised correlation (the share of the signal's amplitude that the
  reference explains through an echo path no louder than 6 dB down) and the path's gain. It runs twice: on the
  inbound audio (where is the echo?) and on the canceller's output (how much echo is *left*?).
* :class:`~.aec_filter.AdaptiveFilter` cancels it: a partitioned-block frequency-domain NLMS filter, ``taps``
  long, placed at the delay the correlator found and started from its estimate (so it needs few taps and
  cancels most of the echo from its first block). The step follows the share of the inbound audio that the
  echo path accounts for, so the filter learns while the agent echoes and holds still while the caller talks
  over it (double talk).
* :class:`EchoCanceller` runs both and gives every block a *verdict* for the gate in front of the VAD
  (:class:`Verdict`): ``PASS`` (may be the caller), ``ECHO`` (no louder than the echo still left) or ``HOLD``
  (a new sound the correlators have not yet judged, no louder than an echo could be: wait a hop or two). A
  correlation peak counts as an echo only when it is strong, or stays at one lag across hops, or sits where the
  known path is: two voices (the caller's and the agent's) correlate by chance for a moment, never at one lag
  for long.

Nothing here ever decides that a line "has no echo": the correlators run on every hop while the agent is
audible, on the canceller's input and output alike, so an echo that appears after minutes without one is
judged within a hop, and one that changes is re-found and re-learnt.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np
from numpy.fft import rfft

from .aec_filter import AdaptiveFilter
from .aec_path import Correlator, HalfRate, Path, cross_correlate

__all__ = ["AdaptiveFilter", "Correlator", "EchoCanceller", "Path", "Verdict"]

_TINY = 1e-12
QUIET = 10 ** (-70 / 10)  # mean square below which a hop is silence, whatever the line's floor


class Verdict(IntEnum):
    ECHO = 0
    HOLD = 1
    PASS = 2


class EchoCanceller:
    """One call's canceller. ``process(near, far)`` takes inbound audio and the reference (what the caller heard
    at those same instants), any length, and returns the cleaned inbound audio of every completed block; each
    block's :class:`Verdict` is kept for :meth:`verdict` (the last ``keep`` seconds).

    The echo left in the output is bounded, per block, by ``share × raw``: *raw* is the echo the path found by
    the inbound correlator would bring back (its gain, tail included, times the reference at its delay) and
    *share* the part of it the filter leaves (measured on every hop where the inbound audio is mostly echo;
    1 until something is learnt, and it rises at once when cancelling gets worse). A block passes as the
    caller when it is ``margin`` (amplitude) above that bound. ``prior_gain`` is the loudest echo assumed for a
    new sound the correlators have not judged yet (amplitude; 0.3 ≈ 10 dB down, above the loudest
    speakerphone echo). Correlation thresholds (normalised correlation): ``detect``, a peak worth a look;
    ``strong``, an echo without waiting for confirmation; ``dominant``, the inbound audio is mostly echo (the
    path's gain and the filter's share are measured then); ``seed_ncc``, one lag explains enough to start the
    filter over from it."""

    def __init__(
        self,
        rate: int = 8000,
        *,
        block: float = 0.02,
        taps: float = 0.12,
        max_delay: float = 0.48,
        hop_blocks: int = 2,
        mu: float = 0.5,
        detect: float = 0.3,
        dominant: float = 0.7,
        strong: float = 0.8,
        lag_tolerance: float = 2.0,
        seed_ncc: float = 0.6,
        echo_only: float = 0.9,
        prior_gain: float = 0.3,
        margin: float = 2.0,
        tail: float = 0.06,
        far_floor_dbfs: float = -55.0,
        floor_memory: float = 3.0,
        line_memory: float = 5.0,
        keep: float = 3.0,
    ) -> None:
        self.rate = rate
        self.block = b = max(16, int(round(block * rate)))
        self.partitions = max(1, math.ceil(taps * rate / b))
        self.hop_blocks = hop_blocks
        self.history = math.ceil(max_delay * rate / b) + 1  # blocks of reference within the delay range
        self.max_lag = self.history * b
        self.mu = mu
        self.detect = detect
        self.dominant = dominant
        self.strong = strong
        self.lag_tolerance = lag_tolerance
        self.seed_ncc = seed_ncc
        self.echo_only = echo_only
        self.prior = prior_gain**2
        self.margin = margin**2
        self.tail_blocks = max(1, math.ceil(tail * rate / b))
        self.far_floor = 10 ** (far_floor_dbfs / 10)
        self._line_forget = math.exp(-hop_blocks * b / rate / line_memory)
        self.filter = AdaptiveFilter(b, self.partitions, self.history)
        # The correlators run at half the rate (an echo of speech is plain enough below 2 kHz), pre-emphasised.
        # (Once per hop, on the hop's inbound, output and reference at the full rate: one filtering for all three.)
        self._half = HalfRate(hop_blocks * b, 3)
        self._hop_in = np.zeros((3, hop_blocks * b))
        self._hop_active = False  # some block of this hop had a reference in the delay range
        hop2 = hop_blocks * b // 2
        self.near_corr = Correlator(hop2, self.max_lag // 2)
        self.out_corr = Correlator(hop2, self.max_lag // 2)
        self._far2 = np.zeros(hop2 + self.max_lag // 2)
        self._near2 = np.zeros(hop2)
        self._out2 = np.zeros(hop2)
        self._far = np.zeros(2 * b)
        # Mean square of the reference per block, newest first.
        self._far_blocks = np.zeros(self.history + self.tail_blocks + 2)
        self._in_near = np.zeros(0, np.float32)
        self._in_far = np.zeros(0, np.float32)
        self.blocks = 0
        # The echo path (inbound correlator): lag in samples, and the echo's power gain with its tail.
        self.path = Path()
        self.echo_gain = 0.0
        self.line_gain = 0.0  # the loudest echo gain of the last few seconds (``line_memory``), slowly forgotten
        self._unsure = 0  # blocks left whose echo may come from a reference the phone did not play as we think
        self.share = 1.0  # of the echo, what the filter leaves in the output (power)
        self._left_e = self._echo_e = 0.0  # echo left in the output / echo in, over the latest hops of pure echo
        self.state = Verdict.PASS  # ECHO while the output still correlates with the reference
        self._left = Path()  # the echo left in the output (output correlator), lag in blocks
        self._hop_out = 0.0  # the loudest output block of the hop so far
        self._hop_near = 0.0  # inbound energy over the hop (sum of the blocks' mean squares)
        self._hop_direct = 0.0  # the same for the echo the path predicts from the reference at its delay
        self._absent_hops = 0  # hops in a row whose inbound audio was far below that prediction
        self._worse_hops = 0  # hops in a row whose output was louder than the inbound audio
        self._last = Verdict.PASS  # the previous block's verdict (PASS only if it passed as a sound)
        self._fresh = True  # the sound now (if any) started after a quiet hop and is not judged yet
        self._pending = False  # the latest hop saw a correlation peak not yet confirmed as an echo
        self._sound_hops = 0
        self._quiet_hops = 2
        self._floor_ring = np.full(max(8, int(floor_memory * rate / b)), 1.0)
        self._floor_i = 0
        self.floor = 0.0
        n = max(8, int(keep * rate / b))
        self._v = np.full(n, int(Verdict.PASS), np.int8)
        self._bound = np.zeros(n)
        self.seeds = 0  # times the filter started over from the correlator's path
        self.suppressed = 0  # blocks judged ECHO (for metrics)
        self.held = 0  # blocks judged HOLD

    # --- streaming ------------------------------------------------------------------------------------------
    def process(self, near: np.ndarray, far: np.ndarray, unsure: bool = False) -> np.ndarray:
        """``unsure``: the reference's timing may be off (an underrun at the phone, a segment not yet placed by
        its mark, see :class:`~.echo.PlayoutTrack`). Until every echo of that stretch is back (the delay range
        later) the gate bounds the echo by the line's gain times the loudest reference in the whole delay range
        (whatever the lag it comes back at, and whatever the filter can cancel) and the echo path's gain is not
        lowered by inbound audio that lacks the echo the misplaced reference predicts."""
        if len(near) != len(far):
            raise ValueError(f"near and far must have the same length ({len(near)} != {len(far)})")
        if unsure:
            self._unsure = self.history + self.tail_blocks + len(self._in_near) // self.block + len(near) // self.block
        b = self.block
        if len(self._in_near):
            near = np.concatenate([self._in_near, near])
            far = np.concatenate([self._in_far, far])
        whole = len(near) - len(near) % b
        out = np.empty(whole, np.float32)
        for i in range(0, whole, b):
            d, x = np.asarray(near[i : i + b], np.float64), np.asarray(far[i : i + b], np.float64)
            out[i : i + b] = self._block(d, x)
        self._in_near = np.asarray(near[whole:], np.float32)
        self._in_far = np.asarray(far[whole:], np.float32)
        return out

    @property
    def echo_active(self) -> bool:
        """Echo is left in the output now: the filter has not caught up with the path yet."""
        return self.state is Verdict.ECHO

    def verdict(self, start: int, end: int) -> Verdict:
        """The gate's verdict on output samples ``[start, end)``: the harshest of the blocks they overlap."""
        b, n = self.block, len(self._v)
        first, last = start // b, min((end - 1) // b, self.blocks - 1)
        first = max(first, self.blocks - n, 0)
        if last < first:
            return Verdict.PASS
        v = self._v  # (a VAD window spans two or three blocks: plain Python beats numpy's fancy indexing here)
        return Verdict(min(int(v[i % n]) for i in range(first, last + 1)))

    def bound(self, start: int, end: int) -> float:
        """The largest echo bound (mean square) of the blocks ``[start, end)`` overlaps (for tests and tuning)."""
        b, n = self.block, len(self._bound)
        first, last = max(start // b, self.blocks - n, 0), min((end - 1) // b, self.blocks - 1)
        return float(self._bound[np.arange(first, last + 1) % n].max()) if last >= first else 0.0

    # --- one block ------------------------------------------------------------------------------------------
    def _block(self, d: np.ndarray, x: np.ndarray) -> np.ndarray:
        b = self.block
        self._far[:b] = self._far[b:]
        self._far[b:] = x
        fb = self._far_blocks
        fb[1:] = fb[:-1]
        fb[0] = float(x @ x) / b
        far_max = float(fb[: self.history].max())
        if far_max <= 0.0:  # no reference within the delay range: no echo can come back (the idle fast path)
            return self._idle_block(d)
        filt = self.filter
        filt.push_reference(self._far)
        y = filt.estimate()
        e = d - y
        near_ms, out_ms, echo_ms = float(d @ d) / b, float(e @ e) / b, float(y @ y) / b
        active = far_max > self.far_floor
        if active:
            filt.adapt(e, self._step(near_ms, echo_ms, out_ms))
        k = self.blocks % self.hop_blocks
        hop_in = self._hop_in
        hop_in[0, k * b : (k + 1) * b] = d
        hop_in[1, k * b : (k + 1) * b] = e
        hop_in[2, k * b : (k + 1) * b] = x
        self._hop_active = True
        if k == self.hop_blocks - 1:
            self._halve()
        self.blocks += 1
        self._track_floor(out_ms)
        raw = self._raw_echo()
        first = k == 0
        self._hop_out = out_ms if first else max(self._hop_out, out_ms)
        self._hop_near = near_ms if first else self._hop_near + near_ms
        direct = self._direct_echo()
        self._hop_direct = direct if first else self._hop_direct + direct
        bound = max(self.share * max(raw, echo_ms), self._left_bound())
        if self._unsure:
            self._unsure -= 1
        if k == self.hop_blocks - 1:
            if active:
                self._correlate()
            else:
                self.state = Verdict.PASS
            bound = max(self.share * max(self._raw_echo(), echo_ms), self._left_bound())
            if self._hop_out <= 4 * max(self.floor, bound):
                self._quiet_hops += 1
                if self._quiet_hops >= 2:  # quiet (longer than a gap between words): the next sound is new
                    self._fresh, self._sound_hops = True, 0
            else:
                self._quiet_hops = 0
                # A new sound is judged once the correlators have seen two hops of it (or six, while a peak
                # awaits confirmation); until then it is held if it is no louder than an echo could be.
                self._sound_hops += 1
                self._fresh = self._fresh and (self._sound_hops < 2 or (self._pending and self._sound_hops < 6))
        if self._unsure:  # the echo may come back at any lag, uncancelled: the line's gain on the loudest reference
            bound = max(bound, self.line_gain * float(fb[: self.history + self.tail_blocks].max()))
        self._judge(out_ms, bound, far_max, active)
        return e.astype(np.float32)

    def _idle_block(self, d: np.ndarray) -> np.ndarray:
        """A block with no reference anywhere in the delay range: the output is the input, every verdict PASS."""
        b = self.block
        self.filter.push_silence()
        k = self.blocks % self.hop_blocks
        hop_in = self._hop_in
        hop_in[0, k * b : (k + 1) * b] = d
        hop_in[1, k * b : (k + 1) * b] = d  # the output is the input
        hop_in[2, k * b : (k + 1) * b] = 0.0  # the reference is silent
        self._hop_active = k > 0 and self._hop_active
        if k == self.hop_blocks - 1:
            self._halve()
        self.blocks += 1
        self._unsure = 0  # (no reference in the whole delay range: no echo of it can come back)
        out_ms = float(d @ d) / b
        self._track_floor(out_ms)
        if k == self.hop_blocks - 1:
            self.state, self._fresh, self._sound_hops = Verdict.PASS, True, 0
        i = (self.blocks - 1) % len(self._v)
        self._v[i] = Verdict.PASS
        self._bound[i] = 0.0
        return d.astype(np.float32)

    def _halve(self) -> None:
        """The hop just completed, at half the rate for the correlators (only the filters' memory when no block
        of it had a reference: nothing will be correlated)."""
        h = len(self._near2)
        self._far2[:-h] = self._far2[h:]
        if self._hop_active:
            self._near2[:], self._out2[:], self._far2[-h:] = self._half.push(*self._hop_in)
        else:
            self._half.skip(*self._hop_in)
            self._near2[:] = self._out2[:] = self._far2[-h:] = 0.0

    def _step(self, near_ms: float, echo_ms: float, out_ms: float) -> float:
        """Full while the inbound audio is (explained or explainable) echo, small while the caller talks over it:
        the share of the inbound audio that the echo path's model (or, once learnt, the filter) accounts for --
        and smaller still when the output is louder than the echo the filter is known to leave (:attr:`share`)
        could make it: the caller's voice, mixed with the echo at a like level (the start or end of a word), is
        no echo to learn, and learning it spreads the filter over many lags (the echo it leaves then comes back
        in the next reply). A filter that really went wrong raises :attr:`share` (measured on hops of pure echo)
        and so its own step again."""
        raw = self._raw_echo()
        if raw <= 0.0:
            return 0.0  # no echo path known: nothing to learn (a seed starts the filter when one is found)
        explained = min(max(echo_ms, raw), 2 * raw)
        expected = 4.0 * (self.share * max(raw, echo_ms) + self.floor)
        return self.mu * min(1.0, explained / (near_ms + _TINY)) * min(1.0, expected / (out_ms + _TINY))

    def _raw_echo(self) -> float:
        """The echo the path would bring back in the newest block (mean square, before cancelling)."""
        if self.echo_gain <= 0.0:
            return 0.0
        lag = int(self.path.lag) // self.block
        span = self._far_blocks[max(lag - 1, 0) : lag + self.tail_blocks + 1]
        return self.echo_gain * float(span.max()) if span.size else 0.0

    def _direct_echo(self) -> float:
        """The echo the path would bring back in the newest block from the reference at its very delay."""
        if self.echo_gain <= 0.0:
            return 0.0
        return self.echo_gain * float(self._far_blocks[int(self.path.lag) // self.block])

    def _left_bound(self) -> float:
        """The echo the output correlator still finds (mean square), while it finds any."""
        if self.state is not Verdict.ECHO:
            return 0.0
        lag = int(self._left.lag)
        span = self._far_blocks[max(lag - 1, 0) : lag + 2]
        return self._left.gain**2 * float(span.max()) if span.size else 0.0

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

    def _correlate(self) -> None:
        # Only a hop with sound above the noise floor is worth correlating (most hops of a call without echo
        # are not): the others count as silence, without an FFT.
        loud = max(4 * self.floor, QUIET)  # (a clean line's floor is μ-law's idle code: next to nothing)
        near_loud = self._hop_near / self.hop_blocks > loud
        out_loud = self._hop_out > loud
        if near_loud or out_loud:
            half_lags = self.max_lag // 2
            ref = self._far2
            spec = rfft(ref, self.near_corr.nfft)
            cum = np.concatenate([[0.0], np.cumsum(ref * ref)])
            hop = len(self._near2)
            energy = (cum[hop : hop + half_lags + 1] - cum[: half_lags + 1])[::-1]
        if near_loud and out_loud:  # (both at once: one transform each way for the two)
            both = cross_correlate(np.stack([self._near2, self._out2]), spec, self.near_corr.nfft, half_lags)
            self.near_corr.push(self._near2, spec, energy, both[0])
            self.out_corr.push(self._out2, spec, energy, both[1])
        else:
            if near_loud:
                self.near_corr.push(self._near2, spec, energy)
            else:
                self.near_corr.push_quiet()
            if out_loud:
                self.out_corr.push(self._out2, spec, energy)
            else:
                self.out_corr.push_quiet()
        near, left = self.near_corr, self.out_corr.short
        fresh = near.short
        seen = self._confirmed(self.near_corr)
        left_seen = self._confirmed(self.out_corr)
        self._pending = (fresh.ncc >= self.detect and not seen) or (left.ncc >= self.detect and not left_seen)
        # Where the echo is: the inbound correlator's confirmed peak.
        if seen:
            self.path = Path(2 * fresh.lag, fresh.ncc, fresh.gain)
            # (Measured on hops that held sound: a quiet hop adds nothing to the sums, and no gain of its own.)
            if near_loud and fresh.ncc >= self.dominant:  # mostly echo: measure the path and the filter
                # (The newest hop's gain, or the short sum's when that is more: a hop whose echo comes back at
                # another lag than the reference's, an underrun at the phone, is no measure of the path.)
                gain = max(near.hop_gain(fresh.lag), fresh.gain) ** 2 / max(fresh.ncc**2, 0.5)
                self.echo_gain = max(gain, self.echo_gain) if self._unsure else gain
                self.line_gain = max(self.line_gain, gain)
                hop_share = float(self._out2 @ self._out2) / (float(self._near2 @ self._near2) + _TINY)
                echo_only = near.hop_ncc(fresh.lag)  # how much of the newest hop alone is the echo
                if left_seen:  # the output still holds echo: cancelling got worse (a new path): at once
                    self.share = min(1.0, max(hop_share, 0.5 * self.share + 0.5 * hop_share))
                elif echo_only >= self.echo_only:
                    # The hop is the echo through and through (no caller in it): whatever the output holds beyond
                    # the hop's little else is echo the filter left, even when it correlates at no one lag (a
                    # filter that adapted over the caller's voice leaves its echo spread over many lags): at once.
                    near_e, out_e = float(self._near2 @ self._near2), float(self._out2 @ self._out2)
                    self._left_e = 0.5 * self._left_e + max(out_e - (1.0 - echo_only**2) * near_e, 0.0)
                    self._echo_e = 0.5 * self._echo_e + echo_only**2 * near_e
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
        worse = out_loud and float(self._out2 @ self._out2) > 2 * float(self._near2 @ self._near2) + _TINY
        self._worse_hops = self._worse_hops + 1 if worse else 0
        if self._worse_hops >= 3:
            self.filter.clear()
            self.out_corr.clear_short()
            left, left_seen = self.out_corr.short, False
            self._worse_hops = 0
        # The inbound audio far quieter than the echo the path predicts, hop after hop: the echo has gone.
        if self._unsure:  # the echo is not where a misplaced reference predicts it: that says nothing of the path
            self._absent_hops = 0
        elif self._hop_direct > 4 * self.hop_blocks * self.floor:  # an echo worth hearing was due
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

    def _judge(self, out_ms: float, bound: float, far_max: float, active: bool) -> None:
        i = (self.blocks - 1) % len(self._v)
        if not active:
            verdict, bound = Verdict.PASS, 0.0
        elif bound > 0.0 and out_ms <= (self.margin if self._last is not Verdict.PASS else 1.0) * bound:
            # (Hysteresis: a sound already passing keeps passing while it stays above the echo left, so the
            # caller's quieter syllables are not cut out of their words.)
            verdict = Verdict.ECHO
        elif (self._fresh and self.state is not Verdict.ECHO and out_ms > 4 * self.floor
              and out_ms <= self.margin * self.prior * far_max):
            verdict = Verdict.HOLD  # a new sound, as loud as an echo could be: the next hop judges it
        else:
            verdict = Verdict.PASS
        self._v[i] = verdict
        # (A block at the noise floor that passed is no sound "already passing": no hysteresis after it.)
        self._last = Verdict.HOLD if verdict is Verdict.PASS and out_ms <= 4 * self.floor else verdict
        self._bound[i] = bound
        if verdict is Verdict.ECHO:
            self.suppressed += 1
        elif verdict is Verdict.HOLD:
            self.held += 1

    def _track_floor(self, out_ms: float) -> None:
        ring = self._floor_ring
        ring[self._floor_i] = out_ms
        self._floor_i = (self._floor_i + 1) % len(ring)
        if self._floor_i % 8 == 0 or self.blocks <= 8:
            self.floor = float(ring.min())
