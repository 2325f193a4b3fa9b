"""An echo canceller for the inbound phone audio: what the caller heard (the reference) is subtracted from what
comes back, through an echo path that is found, followed and re-found as it appears, changes and disappears.

Theory of operation
-------------------
Both signals are on one clock: the inbound audio, and the agent's audio *as the caller heard it* at the same
instants (placed by the mark ledger, see :class:`~.echo.PlayoutTrack`). The echo is the reference through an
unknown path: a delay (40-400 ms on phone lines), a gain (12-30 dB down) and a short response (a hybrid's
dispersion, a room's reverberation), changing whenever the caller switches to the speakerphone or back.

Four parts, plain numpy on blocks of 20 ms, no I/O and no clock:

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
  over it (double talk). A block its estimate would make louder than it came in (an echo that has just gone or
  dropped) goes on as it came in: the estimate of an echo the line no longer has is the agent's voice.
* :class:`~.aec_track.PathTracker` drives the correlators and judges their peaks: where the path is, how much
  of the echo the filter leaves, whether echo is left in the output; it places, seeds and clears the filter.
* :class:`~.aec_gate.EchoGate` gives every block a *verdict* for the gate in front of the VAD
  (:class:`Verdict`): ``PASS`` (may be the caller), ``ECHO`` (no louder than the echo still left) or ``HOLD``
  (a new sound the correlators have not yet judged, no louder than an echo could be: wait a hop or two). A
  correlation peak counts as an echo only when it is strong, or stays at one lag across hops, or sits where the
  known path is: two voices (the caller's and the agent's) correlate by chance for a moment, never at one lag
  for long.

:class:`EchoCanceller` runs them block by block.

Nothing here ever decides that a line "has no echo": the correlators run on every hop while the agent is
audible, on the canceller's input and output alike, so an echo that appears after minutes without one is
judged within a hop, and one that changes is re-found and re-learnt.
"""

from __future__ import annotations

import math

import numpy as np

from .aec_filter import AdaptiveFilter
from .aec_gate import EchoGate, Verdict
from .aec_path import Correlator, Path
from .aec_ref import Reference
from .aec_track import QUIET, PathTracker

__all__ = ["QUIET", "AdaptiveFilter", "Correlator", "EchoCanceller", "Path", "Verdict"]


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
    filter over from it; ``echo_only``, the newest hop alone is the echo through and through (what the filter
    leaves is measured on it, whatever the lags)."""

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
        self.tail_blocks = max(1, math.ceil(tail * rate / b))
        self.far_floor = 10 ** (far_floor_dbfs / 10)
        # What the caller heard, at the full rate, as far back as the filter and the correlators look.
        self.ref = Reference(b, max(AdaptiveFilter.reference_span(b, self.partitions, self.history),
                                    PathTracker.reference_span(b, self.history, hop_blocks)))
        self.filter = AdaptiveFilter(b, self.partitions, self.history, self.ref)
        self.tracker = PathTracker(rate, b, self.history, self.tail_blocks, hop_blocks, self.filter, self.ref, mu=mu,
                                   detect=detect, dominant=dominant, strong=strong, lag_tolerance=lag_tolerance,
                                   seed_ncc=seed_ncc, echo_only=echo_only, line_memory=line_memory)
        self.gate = EchoGate(rate, b, margin=margin**2, prior=prior_gain**2, floor_memory=floor_memory, keep=keep)
        # Blocks of silent reference in a row: once they span everything that remembers the reference (the delay
        # range and the tail), a silent block changes nothing of it.
        self._silent = self._silent_span = len(self.tracker.far_blocks)
        self._in_near = np.zeros(0, np.float32)
        self._in_far = np.zeros(0, np.float32)
        self.blocks = 0
        # Asleep: blocks that came while dormant, not yet taken through the idle block (see :meth:`process_silent`):
        # how many, and all that their lasting effect needs -- the newest ones' mean squares (for the floor) and the
        # newest two hops' audio (for the hop the next reference starts in).
        self._asleep_blocks = 0
        self._asleep_ms: list[float] = []
        self._asleep_audio: list[np.ndarray] = []
        self._wake_blocks = self.gate.floor_blocks + 8  # (the floor's memory, and its next update)
        self._wake_audio = 2 * hop_blocks

    # --- what the parts know --------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The echo path the inbound correlator confirmed (lag in samples)."""
        return self.tracker.path

    @property
    def echo_gain(self) -> float:
        """The echo's power gain with its tail (0 while no path is known)."""
        return self.tracker.echo_gain

    @property
    def line_gain(self) -> float:
        """The loudest echo gain of the last few seconds, slowly forgotten."""
        return self.tracker.line_gain

    @property
    def share(self) -> float:
        """Of the echo, what the filter leaves in the output (power)."""
        return self.tracker.share

    @property
    def seeds(self) -> int:
        """Times the filter started over from the correlator's path."""
        return self.tracker.seeds

    @property
    def state(self) -> Verdict:
        """ECHO while the output still correlates with the reference."""
        return self.tracker.state

    @property
    def near_corr(self) -> Correlator:
        return self.tracker.near_corr

    @property
    def out_corr(self) -> Correlator:
        return self.tracker.out_corr

    @property
    def floor(self) -> float:
        """The output's noise floor (mean square)."""
        self.wake()
        return self.gate.floor

    @property
    def suppressed(self) -> int:
        """Blocks judged ECHO (for metrics)."""
        return self.gate.suppressed

    @property
    def held(self) -> int:
        """Blocks judged HOLD."""
        return self.gate.held

    @property
    def echo_active(self) -> bool:
        """Echo is left in the output now: the filter has not caught up with the path yet."""
        return self.tracker.state is Verdict.ECHO

    # --- streaming ------------------------------------------------------------------------------------------
    def process(self, near: np.ndarray, far: np.ndarray, unsure: bool = False) -> np.ndarray:
        """The cleaned audio of every completed block (float32). Whole blocks of float32 (a 20 ms frame, or several,
        with no part block left over before or after) that the canceller leaves as they are -- no echo estimate to
        take away yet (no echo found on the line, or none since the filter was cleared), or one that would only make
        the block louder (see :meth:`_block`) -- come back as ``near`` itself, which tells the caller the audio is
        unchanged.

        ``unsure``: the reference's timing may be off (an underrun at the phone, a segment not yet placed by
        its mark, see :class:`~.echo.PlayoutTrack`). Until every echo of that stretch is back (the delay range
        later) the gate bounds the echo by the line's gain times the loudest reference in the whole delay range
        (whatever the lag it comes back at, and whatever the filter can cancel) and the echo path's gain is not
        lowered by inbound audio that lacks the echo the misplaced reference predicts."""
        if len(near) != len(far):
            raise ValueError(f"near and far must have the same length ({len(near)} != {len(far)})")
        if self._asleep_blocks:
            self.wake()
        if unsure:
            self.tracker.unsure = (self.history + self.tail_blocks + len(self._in_near) // self.block
                                   + len(near) // self.block)
        b = self.block
        if len(self._in_near):
            near = np.concatenate([self._in_near, near])
            far = np.concatenate([self._in_far, far])
        elif len(near) == b:  # (one block, the call's 20 ms frame: no bookkeeping)
            d = np.asarray(near, np.float64)
            e = self._block(d, np.asarray(far, np.float64))
            if e is d and near.dtype == np.float32:  # (nothing taken away: no echo estimate yet, see process())
                return near
            return e.astype(np.float32)
        whole = len(near) - len(near) % b
        out = np.empty(whole, np.float32)
        changed = bool(len(self._in_near)) or whole != len(near) or near.dtype != np.float32
        for i in range(0, whole, b):
            d, x = np.asarray(near[i : i + b], np.float64), np.asarray(far[i : i + b], np.float64)
            e = self._block(d, x)
            changed = changed or e is not d
            out[i : i + b] = e
        self._in_near = np.asarray(near[whole:], np.float32)
        self._in_far = np.array(far[whole:], np.float32)  # (a copy: ``far`` may be a view of the reply)
        return out if changed else near

    def process_silent(self, near: np.ndarray, unsure: bool = False) -> np.ndarray:
        """:meth:`process` with a silent reference (the agent is not audible): the same output and state. Once the
        reference has been silent for longer than it is remembered, a 20 ms frame only passes through the idle
        block (the inbound hot path of a call while the agent is silent), without the reference's arithmetic; so do
        several whole blocks at once, and then ``near`` itself comes back (as float32: the same object when it is
        float32), which tells the caller the audio is unchanged."""
        b = self.block
        if self.dormant and len(near) % b == 0:
            # (process() -> _block() -> _idle_block() per block, which changes nothing but counters, the floor and
            # the hop's audio -- so the blocks wait, asleep, until something needs them: see wake(). ``unsure`` is
            # cleared by the idle hop, see push_idle.)
            d = np.array(near, np.float64)  # (a copy: the newest blocks are kept)
            ms, audio = self._asleep_ms, self._asleep_audio
            for i in range(0, len(d), b):
                block = d[i : i + b]
                ms.append(float(block @ block) / b)  # (as the idle block works it out)
                audio.append(block)
            self._asleep_blocks += len(d) // b
            if len(ms) > 2 * self._wake_blocks:  # (only the newest are ever needed)
                del ms[: -self._wake_blocks]
            if len(audio) > self._wake_audio:
                del audio[: -self._wake_audio]
            return np.asarray(near, np.float32)
        return self.process(near, np.zeros(len(near), np.float32), unsure)

    def wake(self) -> None:
        """Take the blocks that came while dormant (:meth:`process_silent`) through the idle block, as if each had
        gone through when it came: the newest two hops in full, the floor's memory before them by their mean squares,
        older ones by their counters alone (their verdicts pass; what else they touched, newer ones overwrite).
        Happens by itself when the reference comes back, or when the floor or the state is asked for."""
        m = self._asleep_blocks
        if not m:
            return
        hop_blocks, gate = self.hop_blocks, self.gate
        ms, audio = self._asleep_ms[-self._wake_blocks :], self._asleep_audio
        self._asleep_blocks, self._asleep_ms, self._asleep_audio = 0, [], []
        # All but the newest two hops: silent reference for the filter and the correlators; the oldest by their
        # counters alone, the floor's memory by their mean squares (the hop's audio they wrote, later hops overwrite;
        # the tracker's flags are the idle ones already). Then the newest blocks in full.
        self.ref.push_silence(m - len(audio))
        self.filter.push_silence(m - len(audio))
        skip = m - len(ms)
        if skip:
            gate.skip_idle(self.blocks, skip, hop_blocks)
            self.blocks += skip
        for block_ms in ms[: len(ms) - len(audio)]:
            k = self.blocks % hop_blocks
            self.blocks += 1
            gate.track_floor(block_ms, self.blocks)
            gate.idle(self.blocks - 1, k == hop_blocks - 1)
        for block in audio:  # (never more than ``ms`` holds)
            self._idle_block(block)

    @property
    def dormant(self) -> bool:
        """The reference has been silent for longer than it is remembered: while it stays silent, every block only
        passes through (:meth:`process_silent` of whole blocks gives what :meth:`process` would, whenever it runs)."""
        return self._silent >= self._silent_span and not len(self._in_near)

    def verdict(self, start: int, end: int) -> Verdict:
        """The gate's verdict on output samples ``[start, end)``: the harshest of the blocks they overlap."""
        if self._asleep_blocks:  # (asleep blocks all pass; only what the gate would still remember counts)
            b = self.block
            start = max(start, (self.blocks + self._asleep_blocks - self.gate.kept) * b)
            end = min(end, self.blocks * b)
            if end <= start:
                return Verdict.PASS
        return self.gate.verdict(start, end, self.blocks)

    def bound(self, start: int, end: int) -> float:
        """The largest echo bound (mean square) of the blocks ``[start, end)`` overlaps (for tests and tuning)."""
        self.wake()
        return self.gate.bound(start, end, self.blocks)

    # --- one block ------------------------------------------------------------------------------------------
    def _block(self, d: np.ndarray, x: np.ndarray) -> np.ndarray:
        """One block of inbound audio ``d`` and reference ``x``: the output (float64; the caller's to convert)."""
        b = self.block
        far_ms = float(x @ x) / b
        if far_ms == 0.0 and not np.count_nonzero(x):
            if self._silent >= self._silent_span:  # (silence for longer than the reference is remembered)
                return self._idle_block(d)
            self._silent += 1
            self.ref.push(None)
        else:
            self._silent = 0
            self.ref.push(x)
        track, gate = self.tracker, self.gate
        far_max = track.push_far(far_ms)
        if far_max <= 0.0:  # no reference within the delay range: no echo can come back (the idle fast path)
            return self._idle_block(d, pushed=True)
        filt = self.filter
        filt.push_reference()
        near_ms = float(d @ d) / b
        if filt.active:
            y = filt.estimate()
            e = d - y
            out_ms, echo_ms = float(e @ e) / b, float(y @ y) / b
        else:  # (no echo estimate: the output is the input)
            e, out_ms, echo_ms = d, near_ms, 0.0
        active = far_max > self.far_floor
        # (No echo path known -- most blocks of a call without echo -- means no raw echo and nothing to learn:
        # step() would be 0; the calls are skipped, not their result.)
        raw = track.raw_echo() if track.echo_gain > 0.0 else 0.0
        if active and raw > 0.0:
            filt.adapt(e, track.step(near_ms, echo_ms, raw, out_ms, gate.floor))
        k = self.blocks % self.hop_blocks
        track.push_hop(k, d, e)
        self.blocks += 1
        gate.track_floor(out_ms, self.blocks)
        track.note(k == 0, out_ms, near_ms)
        if out_ms > near_ms:
            # The estimate adds more than it takes away: an echo that has just gone or dropped (the phone off the
            # speaker), or one the filter has not caught up with. The inbound audio itself is the better output
            # (as AEC3's output selector): what the filter would add is the agent's voice, which must never reach
            # the VAD as a sound of the caller's. (The tracker above measured the filter's own output.)
            e, out_ms = d, near_ms
        if track.unsure:
            track.unsure -= 1
        if k == self.hop_blocks - 1:  # (the bound after the hop's judgement)
            if active:
                track.correlate(gate.floor)
            else:
                track.skip_hop()
            bound = max(track.share * max(track.raw_echo(), echo_ms), track.left_bound())
            gate.end_hop(track.hop_out, bound, track.pending)
        elif track.state is Verdict.ECHO:  # (else no echo is left in the output: left_bound() is 0)
            bound = max(track.share * max(raw, echo_ms), track.left_bound())
        else:
            bound = track.share * max(raw, echo_ms)
        if track.unsure:  # the echo may come back at any lag, uncancelled: the line's gain on the loudest reference
            bound = max(bound, track.line_gain * max(track.far_blocks[: self.history + self.tail_blocks]))
        gate.judge(self.blocks - 1, out_ms, bound, far_max, active, track.state is Verdict.ECHO)
        return e

    def _idle_block(self, d: np.ndarray, pushed: bool = False) -> np.ndarray:
        """A block with no reference anywhere in the delay range: the output is the input, every verdict PASS.
        (``pushed``: its silent reference is in :attr:`ref` already.)"""
        b = self.block
        if not pushed:
            self.ref.push(None)
        self.filter.push_silence()
        k = self.blocks % self.hop_blocks
        self.tracker.push_idle(k, d)
        self.blocks += 1
        self.gate.track_floor(float(d @ d) / b, self.blocks)
        self.gate.idle(self.blocks - 1, k == self.hop_blocks - 1)
        return d
