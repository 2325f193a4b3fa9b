"""The echo canceller's gate: a verdict on every block of its output, for the gate in front of the VAD.

``PASS`` (may be the caller), ``ECHO`` (no louder than the echo still left) or ``HOLD`` (a new sound the
correlators have not yet judged, no louder than an echo could be: wait a hop or two). :class:`EchoGate` is fed,
per block, the output's mean square and the bound on the echo it may still hold (worked out by
:class:`~.aec.EchoCanceller` from the path that :class:`~.aec_track.PathTracker` follows) and keeps the verdicts
of the last few seconds, the line's noise floor and whether the sound now is new.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

__all__ = ["EchoGate", "Verdict"]


class Verdict(IntEnum):
    ECHO = 0
    HOLD = 1
    PASS = 2


_VERDICTS = tuple(Verdict)  # (by value)


class EchoGate:
    """One call's verdicts, per block of ``block`` samples at ``rate``. ``margin``: how far (power) above the echo
    bound a block passes as the caller; ``prior``: the loudest echo (power gain) assumed for a new sound the
    correlators have not judged yet; ``floor_memory``: seconds over which the noise floor is the quietest block;
    ``keep``: seconds of verdicts kept for :meth:`verdict`."""

    def __init__(self, rate: int, block: int, *, margin: float, prior: float, floor_memory: float,
                 keep: float) -> None:
        self.block = block
        self.margin = margin
        self.prior = prior
        self._last = Verdict.PASS  # the previous block's verdict (PASS only if it passed as a sound)
        self.fresh = True  # the sound now (if any) started after a quiet hop and is not judged yet
        self.sound_hops = 0
        self._quiet_hops = 2
        self._floor_ring = np.full(max(8, int(floor_memory * rate / block)), 1.0)
        self._floor_i = 0
        self.floor = 0.0
        n = max(8, int(keep * rate / block))
        # (Plain Python containers: a block writes one item of each and a query reads two or three, where numpy's
        # per-item access costs more than the item.)
        self._v = bytearray([Verdict.PASS]) * n
        self._bound = [0.0] * n
        self._harsh_end = 0  # one past the newest block judged other than PASS: every block from here on passed
        self.suppressed = 0  # blocks judged ECHO (for metrics)
        self.held = 0  # blocks judged HOLD

    # --- queries --------------------------------------------------------------------------------------------
    def verdict(self, start: int, end: int, blocks: int) -> Verdict:
        """The verdict on output samples ``[start, end)`` (``blocks`` judged so far): the harshest of the blocks
        they overlap."""
        b, n = self.block, len(self._v)
        first, last = start // b, min((end - 1) // b, blocks - 1)
        first = max(first, blocks - n, 0)
        if last < first or first >= self._harsh_end:  # (the latter: the quiet most of a call is made of)
            return Verdict.PASS
        v = self._v
        return _VERDICTS[min([v[i % n] for i in range(first, last + 1)])]

    def bound(self, start: int, end: int, blocks: int) -> float:
        """The largest echo bound (mean square) of the blocks ``[start, end)`` overlaps."""
        b, n = self.block, len(self._bound)
        first, last = max(start // b, blocks - n, 0), min((end - 1) // b, blocks - 1)
        return max(self._bound[i % n] for i in range(first, last + 1)) if last >= first else 0.0

    # --- per block and per hop ------------------------------------------------------------------------------
    def track_floor(self, out_ms: float, blocks: int) -> None:
        """The output's mean square of the newest block (the ``blocks``-th)."""
        ring = self._floor_ring
        ring[self._floor_i] = out_ms
        self._floor_i = (self._floor_i + 1) % len(ring)
        if self._floor_i % 8 == 0 or blocks <= 8:
            self.floor = float(np.minimum.reduce(ring))

    def end_hop(self, hop_out: float, bound: float, pending: bool) -> None:
        """A hop ended: ``hop_out`` its loudest output block, ``bound`` the echo bound now, ``pending`` whether a
        correlation peak awaits confirmation."""
        if hop_out <= 4 * max(self.floor, bound):
            self._quiet_hops += 1
            if self._quiet_hops >= 2:  # quiet (longer than a gap between words): the next sound is new
                self.fresh, self.sound_hops = True, 0
        else:
            self._quiet_hops = 0
            # A new sound is judged once the correlators have seen two hops of it (or six, while a peak
            # awaits confirmation); until then it is held if it is no louder than an echo could be.
            self.sound_hops += 1
            self.fresh = self.fresh and (self.sound_hops < 2 or (pending and self.sound_hops < 6))

    @property
    def floor_blocks(self) -> int:
        """Blocks the noise floor remembers."""
        return len(self._floor_ring)

    @property
    def kept(self) -> int:
        """Blocks whose verdicts are kept."""
        return len(self._v)

    def skip_idle(self, index: int, blocks: int, hop_blocks: int) -> None:
        """:meth:`idle` for ``blocks`` blocks from ``index`` on (hops of ``hop_blocks``), and the floor's position
        moved past them (what they would have written there, later blocks overwrite: see
        :meth:`~.aec.EchoCanceller.wake`)."""
        n = len(self._v)
        for i in range(index, index + min(blocks, n)):
            self._v[i % n] = Verdict.PASS
            self._bound[i % n] = 0.0
        if (index % hop_blocks) + blocks >= hop_blocks:  # (a hop ended among them)
            self.fresh, self.sound_hops = True, 0
        self._floor_i = (self._floor_i + blocks) % len(self._floor_ring)

    def idle(self, index: int, hop_end: bool) -> None:
        """Block ``index`` had no reference anywhere in the delay range: it passes."""
        if hop_end:
            self.fresh, self.sound_hops = True, 0
        i = index % len(self._v)
        self._v[i] = Verdict.PASS
        self._bound[i] = 0.0

    def judge(self, index: int, out_ms: float, bound: float, far_max: float, active: bool, echo_left: bool) -> None:
        """Block ``index``: ``out_ms`` its mean square, ``bound`` the echo it may hold, ``far_max`` the loudest
        reference in the delay range, ``active`` whether that is above the reference's floor, ``echo_left``
        whether the output still correlates with the reference."""
        i = index % len(self._v)
        if not active:
            verdict, bound = Verdict.PASS, 0.0
        elif bound > 0.0 and out_ms <= (self.margin if self._last is not Verdict.PASS else 1.0) * bound:
            # (Hysteresis: a sound already passing keeps passing while it stays above the echo left, so the
            # caller's quieter syllables are not cut out of their words.)
            verdict = Verdict.ECHO
        elif (self.fresh and not echo_left and out_ms > 4 * self.floor
              and out_ms <= self.margin * self.prior * far_max):
            verdict = Verdict.HOLD  # a new sound, as loud as an echo could be: the next hop judges it
        else:
            verdict = Verdict.PASS
        self._v[i] = verdict
        if verdict is not Verdict.PASS:
            self._harsh_end = index + 1
        # (A block at the noise floor that passed is no sound "already passing": no hysteresis after it.)
        self._last = Verdict.HOLD if verdict is Verdict.PASS and out_ms <= 4 * self.floor else verdict
        self._bound[i] = bound
        if verdict is Verdict.ECHO:
            self.suppressed += 1
        elif verdict is Verdict.HOLD:
            self.held += 1
