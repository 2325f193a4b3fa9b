"""A call's VAD windows: gate, segmenter, end-of-turn model and turn engine, one 32 ms window at a time.

:class:`CallWindows` is the window half of :class:`~.call.CallSession` (a mixin: ``self`` is the call, whose
parts it drives: ``gate``, ``_segmenter``, ``_eot``, ``engine``, ``listener``, ``keypad``). Per window from the
batched VAD (:meth:`CallWindows._on_window`): the keypad's hold on the floor, the inbound gate's verdict (may this
be the caller's voice?), the segmenter's utterance events, the end-of-turn model's questions, the early and
interim transcripts, then the engine's tick. A quiet window (below the VAD's threshold, the caller not speaking)
takes a short way with the same resulting state (``tests/test_quiet_windows.py``); while quiet windows come and
nothing else happens, the call is at rest (:meth:`CallWindows._at_rest`) and its windows may come a few at a time.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from .end_of_turn import Ask
from .listening import Listener
from .segmenter import SpeechEnded, SpeechStarted

log = logging.getLogger("telebridge.call")


class CallWindows:
    """The VAD-window half of :class:`~.call.CallSession` (a mixin)."""

    def _on_window(self, prob: float, window: np.ndarray, end_time: float) -> None:
        if self._closed or self._segmenter is None or self.engine is None:
            return
        self._now = end_time
        engine = self.engine
        if self.keypad.pending or engine.floor_held:  # keypad tones in flight: no barge-in (see keypad.py)
            reply = self._reply
            heard = self.speaking.heard(reply) if reply is not None else 0
            engine.floor_held = self.keypad.holds_floor(reply.turn_id if reply else None, heard, end_time)
        # Gate: may the window be the caller's voice (above the line's noise, not the agent's echo)?
        segmenter = self._segmenter
        judged = self.gate.window(window, end_time, len(window) / segmenter.params.sample_rate, self._reply)
        engine.echo_active = self.gate.echo_active
        window = judged.window
        self._quiet = quiet = (self._quiet_path and prob < segmenter.params.activation_threshold
                               and not segmenter.speaking)
        if quiet:
            # The quiet most of a call is made of: below the VAD's threshold while the caller is not speaking,
            # the window starts nothing (the same state as the full path below, see push_quiet and
            # EndOfTurn.quiet); the engine's tick returns at once unless a timer is due (see turn_idle).
            segmenter.push_quiet(prob if judged.voice else 0.0, window, end_time)
            if self._eot is not None:
                self._eot.quiet()
            actions = engine.tick(end_time)
            if actions:
                self._run_actions(actions)
            return
        actions = []
        for event in segmenter.push(prob if judged.voice else 0.0, window, end_time):
            if isinstance(event, SpeechStarted):
                self._observe("user_speech_started", event.t)
                actions += engine.speech_started(self.gate.onset(event.t))
            elif isinstance(event, SpeechEnded):
                actions += self._speech_ended(event, end_time)
        if self._eot is not None:
            ask = self._eot.window(speaking=segmenter.speaking, quiet=segmenter.pause_duration,
                                   voice_end=segmenter.voice_end, awaiting=engine.awaiting_turn_end,
                                   snapshot=segmenter.snapshot)
            if ask is not None:
                log.debug("call %s: end_of_turn asked%s at %.2f s (speech ended %.2f s, Silero quiet %.2f s)",
                          self.call_id, " again" if ask.again else "", end_time, ask.voice_end,
                          segmenter.silence_duration)
                self._spawn(self._ask_end_of_turn(ask), "end-of-turn")
        if segmenter.speaking:
            quiet = segmenter.silence_duration
            if quiet == 0.0:
                engine.speech_continues(end_time)
            listener: Listener = self.listener  # type: ignore[assignment]  # set with the engine
            if quiet == 0.0 and listener.early is not None:
                listener.cancel_early()  # the caller went on talking: that transcript is stale
            elif listener.wants_early(segmenter.pause_duration):
                self.metrics.early_stt += 1
                listener.start_early(segmenter.snapshot())
            uid = engine.current_utterance
            if uid is not None and engine.wants_interim:
                if listener.streaming:
                    listener.poll_stream_interim(uid, engine.current_start, end_time)
                else:
                    listener.interim.poll(end_time, uid, engine.current_start, segmenter.snapshot)
        actions += engine.tick(end_time)
        if actions:
            self._run_actions(actions)

    def _at_rest(self) -> bool:
        """Nothing waits for this call's next VAD verdicts: its last window was quiet (the caller not speaking), no
        reply is on its way or heard, no keypad tones play and the turn engine has nothing to do at the call's time
        (no utterance, words, greeting or goodbye under way, no timer due). The VAD hub may then take its windows
        every few ticks (``VadHub.run``, ``TELEBRIDGE_VAD_REST_TICKS``): the caller's first word is noticed up to
        that many ticks less one later (its onset time, and everything that follows from the windows, is the same),
        and a timer falling due in the meantime fires as late."""
        engine = self.engine
        return (self._quiet and self._reply is None and engine is not None and engine.reply_turn is None
                and engine.idle_at(self._now) and not engine.floor_held and not self.keypad.pending)

    def _speech_ended(self, event: SpeechEnded, end_time: float) -> list[Any]:
        assert self._segmenter is not None and self.engine is not None
        self.listener.utterance_ended(  # type: ignore[union-attr]  # set with the engine
            time.perf_counter() - (end_time - event.t),
            (event.t - len(event.audio) / self._segmenter.params.sample_rate, event.t),
        )
        if self._eot is not None:
            self._eot.utterance_ended(event.audio, event.t)
        self._observe("user_speech_stopped", event.t)
        return self.engine.speech_ended(event.t, event.audio)

    async def _ask_end_of_turn(self, ask: Ask) -> None:
        """The caller paused: ask the end-of-turn model, then close the utterance early or tell the engine."""
        eot = self._eot  # (set: it made the ask)
        probability = await self._classifier.classify(
            ask.audio, ask.rate, stale=lambda: self._closed or eot.outdated(ask))  # type: ignore[union-attr]
        if self._closed or self._eot is None or self.engine is None or self._segmenter is None:
            return
        verdict = self._eot.verdict(ask.voice_end, probability, again=ask.again)
        if verdict is None:
            return
        self._event("end_of_turn", f"{'complete' if verdict.complete else 'incomplete'} {verdict.probability:.2f}")
        actions: list[Any] = []
        if verdict.close:
            for event in self._segmenter.end_now():
                if isinstance(event, SpeechEnded):
                    actions += self._speech_ended(event, self._now)
        self.engine.turn_verdict(verdict.voice_end, verdict.complete, verdict.probability)
        actions += self.engine.tick(self._now)
        self._run_actions(actions)
