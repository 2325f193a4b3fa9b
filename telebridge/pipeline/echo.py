"""Telling the caller's voice from the agent's own voice echoing back, and from line noise.

Why: on a phone line the VAD alone is a poor interruption signal. A speakerphone or a hybrid with poor echo
return loss sends the agent's speech back to us 100-300 ms later, 15-30 dB down; Silero rightly calls it speech,
and a naive bridge interrupts itself (or, worse, answers its own words after it stops). Steady line noise, in
turn, must never start a turn.

Both guards work on **one energy number per VAD window** (32 ms), never per sample, so the inbound hot path
stays cheap:

* :class:`EchoGuard` keeps the energy envelope of what the caller was *playing* (the agent's audio, positioned by
  the mark ledger) next to the envelope of what came in. Every few windows, while the agent is audible, it
  correlates the two over the echo delay range: a strong correlation at some lag means an echo path, with a gain
  (least squares) and a delay. A window passes as the caller's voice only if it is clearly louder (``margin``)
  than the echo that path predicts. Until the path is measured (the first ~0.8 s of agent speech) a
  conservative prior gain is assumed over the whole delay range: that is the "raised bar" right after the agent
  starts speaking. A quiet line (inbound far below the agent and uncorrelated) measures as "no echo", which
  lowers the bar again.
* :class:`NoiseGate` tracks the line's noise floor (the minimum window energy over the last few seconds) and
  passes only windows clearly above it, so noise below speech level never opens a turn.

The shell turns a failed window into VAD probability 0: the segmenter never sees echo or noise as speech.

Phone calls (input and output at one rate) use the echo canceller of :mod:`.aec` instead of :class:`EchoGuard`;
its reference, the agent's audio as the caller's phone plays it sample by sample, is :class:`PlayoutTrack`.
:class:`EchoGuard` and :class:`PlayoutClock` remain for sessions whose input and output rates differ (realtime
clients, which cancel their own echo).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["EchoGuard", "NoiseGate", "PlayoutClock", "PlayoutTrack"]

_TINY = 1e-12


class _Ring:
    """The last ``size`` values, readable as one contiguous array without copying (double-write trick)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._buf = np.zeros(2 * size, dtype=np.float64)
        self._i = 0
        self.count = 0

    def push(self, value: float) -> None:
        self._buf[self._i] = value
        self._buf[self._i + self.size] = value
        self._i = (self._i + 1) % self.size
        self.count += 1

    def last(self, n: int) -> np.ndarray:
        """The newest ``n`` values, oldest first."""
        end = self._i + self.size
        return self._buf[end - n : end]


class EchoGuard:
    """Per-window decision: could this inbound window be the caller, or is it (at most) our own echo?

    ``window`` is the VAD window in seconds. Delays are searched from ``-lead`` (our playback estimate running
    late) to ``max_delay``. Amplitudes are RMS values in full-scale units.
    """

    def __init__(
        self,
        window: float = 0.032,
        *,
        max_delay: float = 0.6,
        lead: float = 0.1,
        span: float = 0.8,
        margin: float = 1.7,
        prior_gain: float = 0.3,
        max_gain: float = 0.5,
        min_correlation: float = 0.7,
        quiet_ratio: float = 0.1,
        update_every: int = 4,
        active_floor: float = 10 ** (-50 / 20),
        spread: float = 0.1,
    ) -> None:
        self.window = window
        self.max_lag = max(1, math.ceil(max_delay / window))
        self.lead = max(0, math.ceil(lead / window))
        self.span = max(4, math.ceil(span / window))
        self.spread = max(1, math.ceil(spread / window))
        self.margin = margin
        self.prior_gain = prior_gain
        self.max_gain = max_gain
        self.min_correlation = min_correlation
        self.quiet_ratio = quiet_ratio
        self.update_every = update_every
        self.active_floor = active_floor
        depth = self.span + self.max_lag + self.lead + 2
        self._in = _Ring(depth)
        self._ref = _Ring(depth)
        self._since_update = 0
        self.gain: float | None = None  # measured echo gain (amplitude ratio); None until measured
        self.delay: int = 0  # measured echo delay, in windows
        self.correlation = 0.0
        self._candidate: int | None = None  # lag of the last strong correlation, awaiting confirmation
        self.echo_active = False  # the agent's audio is (or was just) playing and may be echoing
        self.suppressed = 0  # windows refused as echo (for metrics)

    def push(self, inbound_ms: float, played_ms: float) -> bool:
        """Feed one window's mean-square energies; True if the window may hold the caller's voice."""
        a_in = math.sqrt(max(inbound_ms, 0.0))
        self._in.push(a_in)
        self._ref.push(math.sqrt(max(played_ms, 0.0)))
        recent = self._ref.last(min(self._ref.count, self.max_lag + self.lead + 2))
        ref_peak = float(recent.max()) if recent.size else 0.0
        if ref_peak < self.active_floor:
            self.echo_active = False
            return True
        self._since_update += 1
        if self._since_update >= self.update_every and self._ref.count >= self.span + self.max_lag + self.lead:
            self._since_update = 0
            self._measure()
        if self.gain is None:
            predicted = self.prior_gain * ref_peak
            self.echo_active = True
        else:
            d = self.delay
            # The loudest played window within ``spread`` of the measured delay: the playback estimate jitters
            # by a window or two (marks come every chunk), and an echo must not slip through that gap.
            hist = self._ref.last(min(self._ref.count, d + self.spread + 1))  # lags d+spread .. 0
            near = hist[: 2 * self.spread + 1]
            predicted = self.gain * float(near.max()) if near.size else 0.0
            self.echo_active = self.gain >= 0.03
        passes = predicted <= 0.0 or a_in > self.margin * predicted
        if not passes:
            self.suppressed += 1
        return passes

    def _measure(self) -> None:
        """Correlate the inbound envelope with the played one at every lag; adopt a clear echo path."""
        n, lead, lags = self.span, self.lead, self.max_lag + self.lead + 1
        y = self._in.last(n + lead)[:n]  # inbound, ending ``lead`` windows ago
        ref = self._ref.last(n + lead + self.max_lag)  # oldest first
        # Row j = played envelope shifted by lag (max_lag - j) relative to y; lags run -lead .. max_lag.
        rows = np.lib.stride_tricks.sliding_window_view(ref, n)[:lags]
        yc = y - y.mean()
        rc = rows - rows.mean(axis=1, keepdims=True)
        denom = np.sqrt((rc * rc).sum(axis=1) * float(yc @ yc)) + _TINY
        corr = (rc @ yc) / denom
        best = int(np.argmax(corr))
        lag = self.max_lag - best
        energy = (rows * rows).sum(axis=1)
        gain = float(rows[best] @ y) / (float(energy[best]) + _TINY)
        self.correlation = float(corr[best])
        if self.correlation >= self.min_correlation and float(energy[best]) > n * self.active_floor**2:
            # Speech envelopes can correlate by chance (the caller talking over the agent); a real echo path
            # shows the same delay measurement after measurement, so a lag is adopted only when confirmed.
            confirmed = self._candidate is not None and abs(self._candidate - lag) <= 1
            self._candidate = lag
            if confirmed:
                gain = min(max(gain, 0.0), self.max_gain)
                if self.gain is not None:
                    gain = min(0.5 * self.gain + 0.5 * gain, 1.5 * self.gain)  # rises slowly, falls fast
                self.gain = gain
                self.delay = max(lag, 0)
            return
        self._candidate = None
        if float(y @ y) <= (self.quiet_ratio**2) * float(energy.max()):
            # Inbound far below what was played and unrelated to it: at most a faint echo.
            quiet = math.sqrt(float(y @ y) / (float(energy.max()) + _TINY))
            if self.gain is None or quiet < self.gain:
                self.gain = quiet
                self.delay = max(lag, 0)


class NoiseGate:
    """Passes windows clearly above the line's noise floor (the quietest window of the last few seconds)."""

    def __init__(
        self,
        window: float = 0.032,
        *,
        memory: float = 3.0,
        margin_db: float = 9.0,
        max_floor_dbfs: float = -40.0,
        min_level_dbfs: float = -60.0,
        update_every: int = 8,
    ) -> None:
        self._ring = _Ring(max(8, math.ceil(memory / window)))
        self._ratio = 10 ** (margin_db / 10)
        self._max_floor = 10 ** (max_floor_dbfs / 10)
        self._min_level = 10 ** (min_level_dbfs / 10)
        self._every = update_every
        self._n = 0
        self.floor = 0.0  # mean-square energy of the noise floor
        self.refused = 0
        self.last = 0.0  # the newest window's mean-square energy (the console's level meter)

    def push(self, ms: float) -> bool:
        self.last = ms
        self._ring.push(ms)
        self._n += 1
        if self._n % self._every == 0 or self._n <= self._every:
            seen = self._ring.last(min(self._ring.count, self._ring.size))
            self.floor = min(float(seen.min()), self._max_floor)
        ok = ms >= self._min_level and ms >= self.floor * self._ratio
        if not ok:
            self.refused += 1
        return ok


class PlayoutClock:
    """Which samples of the agent's audio the caller is hearing now, on the inbound clock.

    The mark ledger says how far playback had got when the last mark came back (``heard``). Marks come every
    chunk (tens of ms), and they travel with the inbound audio, so between two marks playback is extrapolated at
    real time, never more than ``max_ahead`` past the last mark.
    """

    def __init__(self, rate: int, max_ahead: float = 0.12) -> None:
        self.rate = rate
        self.max_ahead = int(max_ahead * rate)
        self.position = 0
        self._heard = -1
        self._at = 0.0

    def reset(self, position: int, t: float) -> None:
        """Playback of a segment starting at ``position`` began at call time ``t``."""
        self.position = position
        self._heard = position
        self._at = t

    def mark(self, heard: int, t: float) -> None:
        """A mark came back: playback had reached ``heard`` at call time ``t``."""
        if heard > self._heard:
            self._heard = heard
            self._at = t

    def advance(self, t: float) -> tuple[int, int]:
        """Playback span ``[start, end)`` (samples) during the window that ended at ``t``."""
        start = self.position
        guess = self._heard + int((t - self._at) * self.rate)
        end = max(start, min(guess, self._heard + self.max_ahead))
        self.position = end
        return start, end


class PlayoutTrack:
    """The agent's audio as the caller's phone plays it, sample by sample on the inbound clock: the echo
    canceller's reference.

    Twilio plays at 8 kHz on the same clock as the audio it sends us, so once a segment starts, playback moves
    one sample per inbound sample; it cannot run past what we have sent (an underrun waits for more). A segment's
    first mark places it exactly (when it started playing is unknown until then); later marks correct the
    estimate only when they disagree by more than ``snap`` seconds (an underrun): re-placing the reference for
    less would make the echo path seem to move.

    :attr:`unsure` says that the reference handed out lately may not be what the phone played: a segment not yet
    placed by its first mark, a mark that moved it or disagrees with it by more than a frame (marks come back
    with the 20 ms frame they were played in), or playback close to running dry (``low`` seconds or less of
    audio sent ahead of it: the phone may have starved for a moment, and when it resumed is known only from a
    later mark). The shell passes it on to the canceller (which then neither trusts the reference's timing nor
    learns from it) and clears it (:meth:`settle`).
    """

    def __init__(self, rate: int, snap: float = 0.04, low: float = 0.04) -> None:
        self.rate = rate
        self.snap = int(snap * rate)
        self.low = int(low * rate)
        self._frame = rate // 50  # a mark is echoed at the end of the 20 ms frame that played it
        self._slack = rate // 200
        self.position = 0  # reply offset being played now
        self.playing = False
        self.unsure = False
        self._heard = -1
        self._placed = False

    def reset(self, position: int) -> None:
        """A segment starting at reply offset ``position`` begins to play now (its first mark will say exactly
        when it did: see :meth:`take`)."""
        self.position = position
        self._heard = position
        self.playing = True
        self._placed = False
        self.unsure = True

    def stop(self) -> None:
        self.playing = False

    def settle(self) -> bool:
        """Whether the reference was unsure since the last call (see :attr:`unsure`); clears it."""
        unsure, self.unsure = self.unsure, False
        return unsure

    def take(self, n: int, heard: int, sent: int) -> tuple[int, int]:
        """Reply offsets ``[start, end)`` played during the next ``n`` inbound samples, given the heard position
        the latest mark gave (``heard``) and how far the reply has been sent (``sent``)."""
        if not self.playing:
            return 0, 0
        start = self.position
        if heard > self._heard:  # a mark came back: playback had reached ``heard`` by now
            self._heard = heard
            off = heard - (start + n)  # (-frame..0 when the estimate is right: the mark waited for its frame's end)
            if not self._placed or abs(off) > self.snap:
                start = max(heard - n, 0)  # the segment's first mark places it exactly; later ones if far off
                self.unsure = True
                self._placed = True
            elif not -self._frame - self._slack <= off <= self._slack:
                self.unsure = True  # off by less than a snap, more than the frame explains: a short underrun
        end = max(start, min(start + n, sent))
        self.unsure = self.unsure or not self._placed or sent - end < self.low
        self.position = end
        return start, end
