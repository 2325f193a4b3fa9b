"""The agent's replies in flight: on the sink in segments, paused, resumed, interrupted, dropped or played out.

A reply's audio (:mod:`.reply`) is fed to the :class:`~telebridge.pipeline.sink.AudioSink` in *segments*: a
pause clears the sink and a resume plays the rest from the heard position as a new segment (a new sink turn id,
so the mark ledger never confuses the flushed marks of the old segment with the new ones). Reply offsets =
segment base + the segment's heard samples.

How a reply ends decides what the history keeps: played out, all of its text; interrupted, only what the caller
heard, marked cut off (:data:`~.reply.CUT_OFF_MARK`); dropped before any of it was heard, nothing (and the
caller's words it answered are merged into the next turn by the engine).

:class:`Speaking` carries out the turn engine's StartReply / CancelReply / Pause / Resume / Interrupt for its
:class:`~telebridge.pipeline.call.CallSession` (the conversation: history, engine, events, tasks), the way
:class:`~.answering.CalleeWatch` does for answering machines. The reply the caller hears now is the session's
``_reply`` (read per frame by its hot path); this class keeps it up to date.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from .. import tracing
from ..metrics import barge_in, turn_latency
from .keypad import Tones
from .reply import CUT_OFF_MARK, ReplyProducer, _Reply, heard_text

if TYPE_CHECKING:
    from .call import CallSession
    from .turns import StartReply

log = logging.getLogger("telebridge.call")


class Speaking:
    def __init__(self, session: CallSession) -> None:
        self.session = session
        self.outbound = session.outbound
        self.producer: ReplyProducer | None = None  # set once the agent is configured
        self.replies: dict[int, _Reply] = {}  # by reply turn id
        self.segments: dict[int, _Reply] = {}  # by sink turn id

    # --- a reply starts, and its audio comes ------------------------------------------------------------------
    def start(self, action: StartReply) -> None:
        s = self.session
        turn_id, user_text = action.turn_id, action.text
        reply = _Reply(turn_id, user_text, kind=action.kind, say=action.say, segment=turn_id, segments=[turn_id])
        if action.settled:
            reply.settled.set()
        listener = s.listener
        reply.timings["speech_end"] = (listener.speech_end_wall if listener else None) or time.perf_counter()
        reply.timings["stt"] = listener.last_stt if listener else 0.0
        reply.timings["start"] = time.perf_counter()
        if user_text:
            message = {"role": "user", "content": user_text}
            reply.user_index = len(s.history)
            s.history.append(message)
            s._fire("on_user_message_added", {"message": message})
        if action.kind in ("reprompt", "goodbye"):
            s._event(action.kind, action.say or "")
            if action.kind == "goodbye":
                s._observe("call_ending", s.ended_reason or "goodbye")
        s._reply = reply
        self.replies[turn_id] = reply
        self.segments[turn_id] = reply
        s._observe("reply_started", turn_id)
        reply.task = s._spawn(self._produce(reply), f"reply{turn_id}")

    async def _produce(self, reply: _Reply) -> None:
        assert self.producer is not None
        await self.producer.produce(reply)
        if not reply.paused and self.outbound.finish_turn(reply.segment):
            self.segment_played(reply.segment)

    def feed(self, reply: _Reply, pcm: np.ndarray) -> None:
        """New reply audio: keep it, and send it unless the reply is paused."""
        reply.audio.append(pcm)
        if not reply.paused:
            self.outbound.enqueue(reply.segment, pcm)

    def play_tones(self, reply: _Reply, tones: Tones) -> None:
        keypad = self.session.keypad
        start = reply.enqueued
        reply.enqueued += len(tones.audio)
        keypad.placed(reply.turn_id, start, reply.enqueued, tones.keys)
        self.session._event("send_dtmf", tones.keys)
        self.feed(reply, tones.audio)

    def heard(self, reply: _Reply) -> int:
        if reply.paused:
            return reply.heard_at_pause
        return reply.base + self.outbound.heard(reply.segment)

    # --- the sink's news (mark ledger / realtime pacing) ------------------------------------------------------
    def segment_audible(self, segment: int) -> None:
        s = self.session
        reply = self.segments.get(segment)
        if reply is None or segment != reply.segment:
            return
        if reply is s._reply:
            s._playout_restarts(reply.base)
        if reply.audible:
            return
        reply.audible = True
        reply.timings["first_audio"] = time.perf_counter()
        s._observe("reply_audible", reply.turn_id, self._record_latency(reply))
        if s.engine is not None:
            s._run_actions(s.engine.reply_audio_started(reply.turn_id, s._now))
        s._fire("on_agent_started_speaking")

    def _record_latency(self, reply: _Reply) -> dict[str, float] | None:
        s = self.session
        row = s.metrics.record_latency(reply)
        if row is None:
            return None
        turn_latency(self.outbound, reply.segment, reply.timings["speech_end"], row,  # Prometheus; total = heard
                     on_total=lambda total: s._observe("reply_heard", reply.turn_id, total))
        tracing.turn_measured(self.session, reply.turn_id, reply.timings, row)  # OpenTelemetry, when on
        log.info(
            "call %s: turn %d latency %.0f ms (endpointing+STT %.0f, STT %.0f, LLM first token %.0f, TTS %.0f)",
            self.session.call_id, reply.turn_id, *(1000 * row[k] for k in ("total", "endpointing", "stt", "llm_first_token", "tts_first_audio")),
        )
        return dict(row)

    def segment_played(self, segment: int) -> None:
        """Every sample of a sink segment has played. Stale segments (paused, then resumed) are ignored."""
        reply = self.segments.get(segment)
        if reply is None or segment != reply.segment or reply.paused or not reply.text_done:
            return
        self._turn_played(reply)

    def _turn_played(self, reply: _Reply) -> None:
        """Every sample of the reply has played at the caller's end."""
        s = self.session
        if self.replies.pop(reply.turn_id, None) is None:
            return
        text = " ".join(sp.text for sp in reply.spans[reply.said_from :]).strip()
        if text:
            message = {"role": "assistant", "content": text}
            s.history.append(message)
            s._fire("on_agent_message_added", {"message": message})
            s._fire("on_agent_stopped_speaking")
        s._observe("reply_done", reply.turn_id, " ".join(sp.text for sp in reply.spans).strip())
        s.metrics.record_reply(reply, reply.enqueued, False)
        self._forget_segments(reply)
        if s._reply is reply:
            s._reply = None
        if s.engine is not None:
            s._run_actions(s.engine.agent_finished(reply.turn_id, s._now))

    def _forget_segments(self, reply: _Reply) -> None:
        for segment in reply.segments:
            self.segments.pop(segment, None)
            self.outbound.forget_turn(segment)

    def _take(self, turn_id: int) -> _Reply | None:
        """Remove a reply in flight and stop its work: at the provider first, then the task."""
        reply = self.replies.pop(turn_id, None)
        if reply is not None and reply.task:
            self._cancel_at_provider(reply)  # before the task: see _cancel_at_provider
            reply.task.cancel()
        return reply

    def settle(self, turn_id: int) -> None:
        """The turn this reply answers is over for sure: its tools may run (see turns.Settle)."""
        reply = self.replies.get(turn_id)
        if reply is not None:
            reply.settled.set()

    def drop(self, turn_id: int) -> None:
        """The caller kept talking before hearing any of this reply: forget it entirely."""
        s = self.session
        reply = self._take(turn_id)
        if reply is None:
            return
        self.outbound.drop_turn(reply.segment)
        self._forget_segments(reply)
        s._observe("reply_dropped", turn_id)
        if reply.user_index is not None and reply.user_index < len(s.history):
            # the user's words are merged into the next turn by the engine
            if s.history[reply.user_index].get("content") == reply.user_text:
                del s.history[reply.user_index :]
        if s._reply is reply:
            s._reply = None

    # --- pause, resume, interrupt ---------------------------------------------------------------------------
    def pause(self, turn_id: int) -> None:
        """Stop at once and clear the far end's buffer, keeping the reply (and its production) alive."""
        reply = self.replies.get(turn_id)
        if reply is None or reply.paused:
            return
        reply.paused = True
        barge_in(self.session.caller_audio.fed / self.session.input_rate, self.session.engine)  # onset -> clear, Prometheus
        reply.heard_at_pause = reply.base + self.outbound.heard(reply.segment)
        self.outbound.drop_turn(reply.segment)
        reply.pause_task = self.session._spawn(self._clear_for_pause(reply), f"pause{turn_id}")

    async def _clear_for_pause(self, reply: _Reply) -> None:
        await self.outbound.clear()
        reply.heard_at_pause = max(reply.heard_at_pause, reply.base + self.outbound.heard(reply.segment))
        self.session._event("pause", f"{reply.turn_id}@{reply.heard_at_pause}")
        self.session._observe("reply_paused", reply.turn_id, reply.heard_at_pause)

    def resume(self, turn_id: int) -> None:
        reply = self.replies.get(turn_id)
        if reply is None or not reply.paused:
            return
        self.session._spawn(self._resume_after_pause(reply), f"resume{turn_id}")

    async def _resume_after_pause(self, reply: _Reply) -> None:
        s = self.session
        if reply.pause_task is not None:
            await asyncio.wait({reply.pause_task})
        if not reply.paused or reply.turn_id not in self.replies or s.engine is None:
            return
        start = reply.heard_at_pause
        segment = s.engine.new_turn_id()
        reply.segment, reply.base, reply.paused = segment, start, False
        reply.segments.append(segment)
        self.segments[segment] = reply
        s._event("resume", f"{reply.turn_id}@{start}")
        s._observe("reply_resumed", reply.turn_id, start)
        rest = reply.audio.view(start)
        if len(rest):
            self.outbound.enqueue(segment, rest.copy())
        if reply.text_done and self.outbound.finish_turn(segment):
            self.segment_played(segment)

    def interrupt(self, turn_id: int) -> None:
        """Commit a barge-in now: the history gets the heard part before the caller's next words, whatever the
        socket does; stopping the audio (if not paused already) and cancelling the reply's work follow."""
        s = self.session
        reply = self._take(turn_id)
        if reply is None:
            return
        if not reply.paused:
            # Marks echoed after this instant may still be credited to audio that Twilio flushes; taking the
            # position now errs on the side of "not heard", never the other way round.
            reply.heard_at_pause = reply.base + self.outbound.heard(reply.segment)
            reply.paused = True
            barge_in(s.caller_audio.fed / s.input_rate, s.engine)  # onset -> clear, Prometheus
            self.outbound.drop_turn(reply.segment)
            s._spawn(self.outbound.clear(), f"clear{turn_id}")
        if s._reply is reply:
            s._reply = None
        message = self.commit_cut_off(reply)
        s.metrics.record_reply(reply, reply.heard_at_pause, True)
        self._forget_segments(reply)
        s._observe("reply_interrupted", turn_id, message["content"])
        s._fire("on_agent_interrupted", {"message": message})
        s._fire("on_agent_stopped_speaking")

    def _cancel_at_provider(self, reply: _Reply) -> None:
        """A cancelled reply's synthesis stops at the provider too (Clear, close the context), not only here.

        Called *before* the reply's task is cancelled: the cancel task is scheduled first, so the TTS session
        still knows the sentence in flight when it runs. The other way round, the reply task's cancellation
        unwinds the session's stream first (its ``finally`` forgets the sentence), and the session has nothing
        left to stop -- on Python 3.12+ always, on 3.11 only thanks to ``wait_for``'s extra loop steps."""
        s = self.session
        if s.speech is not None and not reply.text_done:
            s._spawn(s.speech.cancel_reply(reply.turn_id), f"tts-cancel{reply.turn_id}")

    def level(self, seconds: float = 0.1) -> float:
        """Mean-square energy of the agent audio heard in the last ``seconds`` (0 when silent): the console's meter."""
        reply = self.session._reply
        if reply is None or reply.paused or not reply.audible:
            return 0.0
        end = self.heard(reply)
        start = max(0, end - int(seconds * self.outbound.sample_rate))
        return reply.audio.mean_square(start, end) if end > start else 0.0

    def commit_cut_off(self, reply: _Reply) -> dict[str, str]:
        """Keep in the history only what the caller heard, marked as cut off."""
        s = self.session
        heard = heard_text(reply.spans, self.heard(reply))
        already = " ".join(sp.text for sp in reply.spans[: reply.said_from])
        if already and heard.startswith(already):
            heard = heard[len(already) :].strip()
        message = {"role": "assistant", "content": (heard + CUT_OFF_MARK) if heard else CUT_OFF_MARK}
        if unplayed := s.keypad.unplayed(reply.turn_id, self.heard(reply)):
            message["content"] += f" [cut off before the keypad tones {unplayed} were sent: nothing was pressed]"
        s.history.append(message)
        return message
