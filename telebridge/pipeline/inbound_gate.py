"""The inbound gate of one call: may this VAD window be the caller's voice? (sans-I/O)

Every window of caller audio passes two questions before the segmenter sees its speech probability:

* **line noise** (:class:`~.echo.NoiseGate`): only windows clearly above the line's noise floor count;
* **the agent's own voice coming back** -- on phone calls (input and output at the same rate) the echo canceller
  (:class:`~.aec.EchoCanceller`): it removes the echo from the audio itself (:meth:`InboundGate.cancel`, with
  what the caller's phone is playing at these very samples as the reference, :class:`~.echo.PlayoutTrack`) and
  judges each window PASS / HOLD / ECHO; elsewhere, or when the agent opts out, the energy guard
  (:class:`~.echo.EchoGuard`), which compares the window's energy with that of the agent audio heard then
  (:class:`~.echo.PlayoutClock`, placed by the marks as the audio arrives: :meth:`InboundGate.note_audio`).

It also keeps the **onset** of the caller's sound: the start of the run of windows that passed, backdated through
windows rising out of the echo (a caller's first syllable over the agent is often no louder than its echo), so a
barge-in over echo is timed from when the caller started, not from when the canceller was sure.

Fed the call's windows, clock and the reply the caller hears (its audio and how much of it was heard); no I/O.
The call shell (:mod:`.call`) asks it per frame and per window.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import numpy as np

from .aec import EchoCanceller, Verdict
from .echo import EchoGuard, NoiseGate, PlayoutClock, PlayoutTrack

# Silero confirms speech a window or three after the sound began; the caller's speech is counted (for the
# interruption time threshold) from the start of the run of voice-like windows that led to it -- over echo, of
# the windows rising out of it -- at most this early.
MAX_ONSET_BACKDATE = 0.25
ECHO_ATTENUATION = np.float32(0.1)  # windows the echo canceller judged echo, in the audio the STT gets
# An echo 40 dB below the agent's voice, or louder, found on the line lately: its words may reach the STT.
LINE_ECHO_FLOOR = 1e-4


FrameReference = tuple[np.ndarray | None, bool]
"""The echo canceller's reference for some caller audio, as :meth:`InboundGate.reference` takes it when the audio
arrives: ``(far, unsure)``."""


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    """``voice``: the segmenter may see the window's speech probability; ``window``: the audio it keeps
    (attenuated when judged echo)."""

    voice: bool
    window: np.ndarray


class InboundGate:
    """Per call. ``canceller``: an echo canceller (phone calls); else ``guard``: the energy guard; neither: line
    noise only. ``input_rate`` / ``sink_rate``: the caller's audio and the agent's (the same with a canceller)."""

    def __init__(self, input_rate: int, sink_rate: int, *, canceller: bool, guard: bool) -> None:
        self.input_rate = input_rate
        self.noise = NoiseGate()
        self.aec: EchoCanceller | None = EchoCanceller(input_rate) if canceller else None
        self.guard: EchoGuard | None = EchoGuard() if guard and not canceller else None
        self._track = PlayoutTrack(sink_rate)  # the canceller's reference: what the caller's phone plays now
        self._playout = PlayoutClock(sink_rate)  # the guard's: the agent audio heard as each window arrived
        # (samples fed, heard position) noted as caller audio arrives while the agent is audible: the heard
        # position *as of* each window's audio, however late the batched VAD delivers the window.
        self._heard_log: collections.deque[tuple[int, int]] = collections.deque()
        self._heard_then = 0
        self._refused = 0  # windows the canceller refused as echo
        self._sound_since: float | None = None  # start of the current run of windows that passed the gates
        # Start of a run of windows rising out of the echo (each louder than the last), judged echo: if the sound
        # they lead to passes, its onset was there.
        self._rise_since: float | None = None
        self._last_energy = 0.0

    @property
    def echo_active(self) -> bool:
        """The energy guard hears the agent's echo on the line (the turn engine then waits a little longer)."""
        return self.guard is not None and self.guard.echo_active

    def echo_possible(self) -> bool:
        """May the agent's echo be in what the caller's line brings back now (for the words heard over the agent)?
        With an echo canceller, only once it has found an echo on this line and not long ago (its line gain above
        :data:`LINE_ECHO_FLOOR`, forgotten over half a minute or so of the agent's speech; or a path in view);
        without one, always (the energy guard cannot tell a quiet echo from none)."""
        aec = self.aec
        if aec is None:
            return True
        return aec.line_gain > LINE_ECHO_FLOOR or aec.echo_gain > 0.0 or aec.echo_active

    @property
    def echo_windows_suppressed(self) -> int:
        if self.guard is not None:
            return self.guard.suppressed
        return self._refused if self.aec is not None else 0

    # --- per frame (the caller's audio as it arrives) -------------------------------------------------------
    def cancel(self, pcm: np.ndarray, reply: Any, outbound: Any) -> np.ndarray:
        """The caller's audio without the agent's echo (with a canceller; else unchanged). ``reply``: the reply
        the caller hears now (or ``None``); ``outbound``: the sink, which knows what was sent and heard. ``pcm``
        itself comes back when nothing changed it (no canceller, a dormant one, or one with no echo estimate to
        take away, see :meth:`~.aec.EchoCanceller.process`): the intake relies on that.

        The same as :meth:`reference` now, then :meth:`cancel_held` of the frame with it."""
        if self.aec is None:
            return pcm
        return self._cancel(self.aec, pcm, self.reference(len(pcm), reply, outbound))

    def reference(self, n: int, reply: Any, outbound: Any) -> FrameReference | None:
        """The echo canceller's reference for the next ``n`` samples of caller audio, taken as they arrive (what
        the caller's phone plays at these very samples depends on the marks come back by now), for
        :meth:`cancel_held` to cancel them with later: ``(far, unsure)`` -- ``far`` ``None`` while the agent is
        silent, ``unsure`` as :meth:`~.aec.EchoCanceller.process` takes it -- or ``None`` for a silent reference
        whose timing is sure (and always without a canceller: nothing is cancelled)."""
        if self.aec is None:
            return None
        track = self._track
        if reply is None or not reply.audible or reply.paused:  # the agent is silent: so is the reference
            track.stop()
            return (None, True) if track.settle() else None
        ledger = getattr(outbound, "ledger", None)
        sent = reply.base + (ledger.sent_samples(reply.segment) if ledger is not None else reply.enqueued)
        start, end = track.take(n, reply.base + outbound.heard(reply.segment), sent)
        far = reply.audio.view(start, end)  # (the reply's audio is only ever appended to: the view stays as it is)
        if len(far) != n:  # (playback ran dry, or the reply ended, within the frame: silence after it)
            played, far = far, np.zeros(n, np.float32)
            far[: len(played)] = played
        return far, track.settle()

    def cancel_held(self, pcm: np.ndarray, refs: list[tuple[int, FrameReference | None]] | None = None) -> np.ndarray:
        """:meth:`cancel` of caller audio held since it arrived, in order, with the references :meth:`reference`
        gave for it then: ``refs`` lists ``(samples, reference)`` runs of ``pcm``; none, or ``None`` for a run: a
        silent reference whose timing is sure. The same output and state as :meth:`cancel` of each frame as it came;
        ``pcm`` itself comes back when nothing changed it."""
        aec = self.aec
        if aec is None:
            return pcm
        if not refs:
            return aec.process_silent(pcm)
        out: list[np.ndarray] = []
        changed = False
        pos = 0
        for n, ref in refs:
            near = pcm[pos : pos + n]
            pos += n
            cleaned = self._cancel(aec, near, ref)
            changed = changed or cleaned is not near  # (a part block comes back later, with the next run's audio)
            out.append(cleaned)
        return np.concatenate(out) if changed else pcm

    @staticmethod
    def _cancel(aec: EchoCanceller, near: np.ndarray, ref: FrameReference | None) -> np.ndarray:
        """``near`` through the canceller with the reference :meth:`reference` gave for it."""
        if ref is None:
            return aec.process_silent(near)
        far, unsure = ref
        return aec.process_silent(near, unsure) if far is None else aec.process(near, far, unsure)

    def note_audio(self, fed: int, reply: Any, outbound: Any) -> None:
        """Caller audio up to sample ``fed`` arrived: note how much of the reply had been heard by then (for the
        energy guard's playout clock; the canceller places its reference itself, and nothing else reads it)."""
        if self.guard is not None and reply is not None and reply.audible and not reply.paused:
            self._heard_log.append((fed, reply.base + outbound.heard(reply.segment)))

    def restart(self, base: int, fed: int) -> None:
        """The reply the caller hears starts a segment at reply offset ``base`` when ``fed`` caller samples have
        arrived: the echo's playout clocks start there too."""
        self._heard_log.clear()
        self._heard_then = base
        self._playout.reset(base, fed / self.input_rate)
        self._track.reset(base)

    # --- per VAD window -------------------------------------------------------------------------------------
    def window(self, window: np.ndarray, end_time: float, span: float, reply: Any) -> WindowVerdict:
        """Judge the window ending at ``end_time`` (``span`` seconds long, at the VAD's rate)."""
        energy = float(np.dot(window, window)) / len(window)
        voice = self.noise.push(energy)
        held = False  # a sound the echo canceller has not judged yet: not speech yet, but its onset counts
        aec = self.aec
        if aec is not None:
            rate = self.input_rate
            verdict = aec.verdict(round((end_time - span) * rate), round(end_time * rate))
            if verdict is Verdict.ECHO and voice and energy > 2.0 * self._last_energy:
                if self._rise_since is None:
                    self._rise_since = end_time - span
            elif verdict is Verdict.ECHO or not voice:
                self._rise_since = None
            if verdict is not Verdict.PASS:
                held = voice and verdict is Verdict.HOLD
                self._refused += verdict is Verdict.ECHO and voice
                voice = False
            if verdict is Verdict.ECHO:
                # What is left of the echo stays out of the words too: 20 dB down in the utterance's audio (a
                # remnant around an "uh-huh" must not become "that" or "great" for the STT).
                window = window * ECHO_ATTENUATION
            self._last_energy = energy
        elif self.guard is not None:
            voice = self.guard.push(energy, self._played_energy(end_time, reply)) and voice
        if not (voice or held):
            self._sound_since = None
        elif self._sound_since is None:
            self._sound_since = self._rise_since if self._rise_since is not None else end_time - span
            self._rise_since = None
        return WindowVerdict(voice, window)

    def onset(self, t: float) -> float:
        """When the speech the VAD started at ``t`` really began: the start of the sound that led to it, if that
        is at most :data:`MAX_ONSET_BACKDATE` earlier."""
        since = self._sound_since
        if since is not None and t - MAX_ONSET_BACKDATE <= since < t:
            return since
        return t

    def _played_energy(self, t: float, reply: Any) -> float:
        """Mean-square energy of the agent audio the caller heard during the window ending at ``t``."""
        if reply is None or reply.paused or not reply.audible:
            return 0.0
        log_ = self._heard_log
        limit = t * self.input_rate + 0.5
        while log_ and log_[0][0] <= limit:
            fed, heard = log_.popleft()
            if heard != self._heard_then:  # a mark came back with the audio that arrived at ``fed``
                self._heard_then = heard
                self._playout.mark(heard, fed / self.input_rate)
        start, end = self._playout.advance(t)
        return reply.audio.mean_square(start, end) if end > start else 0.0


__all__ = [
    "ECHO_ATTENUATION", "LINE_ECHO_FLOOR", "MAX_ONSET_BACKDATE", "FrameReference", "InboundGate", "WindowVerdict",
]
