"""One call's caller audio on its way in: the inbound hot path, from a received frame to the VAD.

* **Before the call is ready** (``configure_session`` still running) frames are kept, up to
  :data:`MAX_EARLY_AUDIO_SECONDS`, and fed in order once it is (:meth:`CallerAudio.replay_early`): the caller's
  first words are not lost.
* **Each frame** passes the echo canceller (the call's :class:`~.inbound_gate.InboundGate`) and goes to its
  consumers: the answering-machine watch, the STT (the frame as received when nothing altered it, for a μ-law
  stream) and the process-wide VAD (resampled to its rate).
* **A phone frame** (:meth:`CallerAudio.on_ulaw`) only waits, raw, for the VAD hub's next pass, which decodes,
  cancels and delivers every frame held at once (``before_take``): the VAD never ran before that pass anyway. What
  must be known as the frame arrives is noted then: the call clock, and the echo canceller's reference (what the
  caller's phone plays at these samples, placed by the marks come back so far); so the audio, its clock, its order
  and what the canceller makes of it are the same. The STT and the answering-machine watch get the caller's audio
  at the pass too (at most one tick, 32 ms, after it came). Held audio counts in the VAD's lag.

:attr:`CallerAudio.fed` is the call clock of the newest caller audio (samples at the input rate). Called for every
frame: no awaits, no tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..audio.g711 import ulaw_decode_float
from ..audio.resample import Resampler
from .inbound_gate import FrameReference

if TYPE_CHECKING:
    from .call import CallSession

MAX_EARLY_AUDIO_SECONDS = 10.0  # buffer caller audio while configure_session runs
# Phone frames wait for the VAD's pass at most this long (a stalled or stopped VAD hub): then they go on at once,
# to the STT and the VAD stream (which keeps its own backlog bounded).
MAX_HELD_SECONDS = 1.0


class CallerAudio:
    """The inbound half of a :class:`~.call.CallSession` (``session``: its readiness, gate, reply the caller
    hears, sink, answering-machine watch and speech)."""

    def __init__(self, session: CallSession) -> None:
        self.session = session
        self.input_rate = session.input_rate
        self.fed = 0  # caller samples received once ready (input rate): the call clock of the newest audio
        self._early: list[np.ndarray] = []
        self._early_samples = 0
        self._held = bytearray()  # phone frames (μ-law) that wait for the VAD tick
        # ... and their echo canceller's references, as (samples, reference) runs, once one of them is not a silent
        # one whose timing is sure (until then: none, the held frames' fast path).
        self._refs: list[tuple[int, FrameReference | None]] = []
        self._upsample: Resampler | None = None
        self._vad: Any = None

    def connect(self, vad_stream: Any, vad_rate: int) -> None:
        """The call is set up: its audio goes to ``vad_stream`` (at ``vad_rate``) from now on."""
        if vad_rate != self.input_rate:
            self._upsample = Resampler(self.input_rate, vad_rate)
        self._vad = vad_stream
        vad_stream.before_take = self._feed_held
        vad_stream.held = lambda: len(self._held) / self.input_rate

    def replay_early(self) -> None:
        """The audio kept while the call was set up, in order (the VAD keeps it whole, whatever its length)."""
        early, self._early = self._early, []
        self._vad.accept_backlog(self._early_samples / self.input_rate)
        for pcm in early:
            self.on_audio(pcm)

    def close(self) -> None:
        if self._vad is not None:
            self._vad.close()
        self._held = bytearray()
        self._refs = []

    def on_audio(self, pcm: np.ndarray, ulaw: bytes | None = None) -> None:
        """Caller audio, float32 at ``input_rate``. ``ulaw``: the frame as Twilio sent it, which a μ-law STT stream
        forwards as is -- unless the echo canceller changed the audio: the STT hears the cancelled audio then
        (re-encoded), not the echo."""
        s = self.session
        if not s._ready:
            if not s._closed and self._early_samples < MAX_EARLY_AUDIO_SECONDS * self.input_rate:
                self._early.append(pcm)
                self._early_samples += len(pcm)
            return
        self.fed += len(pcm)
        gate, reply = s.gate, s._reply
        gate.note_audio(self.fed, reply, s.outbound)
        self._deliver(pcm, gate.cancel(pcm, reply, s.outbound), ulaw)

    def on_ulaw(self, payload: bytes) -> None:
        """A phone call's frame as Twilio sent it, μ-law at 8 kHz: held for the VAD's next pass with what must be
        noted now (see the module docstring); before the call is ready, kept by :meth:`on_audio`."""
        s = self.session
        if not s._ready:
            self.on_audio(ulaw_decode_float(payload), payload)
            return
        n = len(payload)
        self.fed += n
        gate, reply = s.gate, s._reply
        gate.note_audio(self.fed, reply, s.outbound)
        ref = gate.reference(n, reply, s.outbound)
        refs = self._refs
        if ref is not None or refs:
            if not refs and self._held:  # (the frames held so far: silent references, all sure)
                refs.append((len(self._held), None))
            refs.append((n, ref))
        self._held += payload
        if len(self._held) > MAX_HELD_SECONDS * self.input_rate:
            self._feed_held()

    def _feed_held(self) -> None:
        """The held frames, decoded and cancelled with the references noted as they arrived, to the call's
        consumers of caller audio and the VAD (what :meth:`on_audio` does per frame)."""
        held = self._held
        if not held or not self.session._ready:
            return
        self._held = bytearray()
        refs, self._refs = self._refs, []
        ulaw = bytes(held)
        pcm = ulaw_decode_float(ulaw)
        self._deliver(pcm, self.session.gate.cancel_held(pcm, refs), ulaw)

    def _deliver(self, heard: np.ndarray, pcm: np.ndarray, ulaw: bytes | None) -> None:
        """Caller audio past the echo canceller (``heard`` before it, ``pcm`` after) to its consumers: the
        answering-machine watch, the STT (also the frames as received, ``ulaw``, when the canceller left them as they
        were -- it hands back its input then: a μ-law stream forwards those bytes instead of re-encoding) and the
        VAD."""
        if pcm is not heard:
            ulaw = None
        s = self.session
        if s.callee is not None:
            s.callee.feed(pcm)
        s.speech.feed(pcm, ulaw)  # type: ignore[union-attr]  # ready: started
        if self._upsample is not None:
            pcm = self._upsample.process(pcm)
        self._vad.feed(pcm)
