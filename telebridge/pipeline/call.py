"""One conversation (a phone call, or a realtime session): the asyncio shell around the sans-I/O parts.

Inbound audio goes float → (the echo canceller) → (resample to the VAD rate) → the process-wide batched VAD. Per
VAD window the call's :class:`~telebridge.pipeline.inbound_gate.InboundGate` decides whether it may be the caller's
voice (else the segmenter sees probability 0), the segmenter cuts utterances, and the
:class:`~telebridge.pipeline.turns.TurnEngine` turns everything into actions that this shell carries out:
transcriptions, replies, pauses, resumes, interruptions, hang-ups and transfers.

The parts, each in its own module: the caller's words (:mod:`.listening`: final, early and interim STT), the
agent's replies in flight (:mod:`.speaking`: segments on the sink, pause, resume, interrupt), a reply's data and
the making of its audio (:mod:`.reply`), what the call measured (:mod:`.call_metrics`), who answered
(:mod:`.answering`), how it ends (:mod:`.ending`: end_call, transfer_call, hang-up and transfer through the call
control), keypad tones (:mod:`.keypad`) and the speech providers (:mod:`.speech`). This module keeps the call's
lifecycle, the action dispatch and the client-driven turns; the VAD windows are :mod:`.windows` (the gate in
:mod:`.inbound_gate`, the frames before them in :mod:`.intake`).

Everything a call starts is owned by its :class:`CallSession` and cancelled by :meth:`CallSession.aclose`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..agent import configure
from ..logs import call_context
from ..metrics import call_event
from ..session import SessionConfig
from ..tools import make_builtin_tools
from .answering import CalleeWatch, first_speaker_waits
from .call_metrics import CallMetrics
from .call_tasks import cancel_all
from .end_of_turn import EndOfTurn
from .ending import HANGUP_CLOSE_AFTER, CallEnding  # noqa: F401  (re-exported, as every name below that lived here)
from .events import EventDispatcher
from .inbound_gate import InboundGate
from .intake import CallerAudio
from .keypad import KeypadTones, current_reply, queue_tones
from .listening import (  # noqa: F401
    ECHO_TEXT_MIN_WORDS, ECHO_TEXT_SHARE, OVER_AGENT_MIN_LOGPROB, Listener, normalise,
)
from .observer import ConversationObserver
from .reply import (  # noqa: F401
    CUT_OFF_MARK, THREAD_RESAMPLE_SECONDS, ReplyProducer, _AudioStore, _CallAgent, _Reply, _Span, heard_text,
)
from .segmenter import SegmenterParams, VadSegmenter
from .sink import AudioSink
from .speaking import Speaking
from .speech import CallSpeech
from .windows import CallWindows
from .turns import (
    CancelReply, HangUp, Interrupt, Notify, Pause, Resume, Settle, StartReply, Transcribe, Transfer, TurnEngine,
    TurnParams,
)

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("telebridge.call")

PHONE_RATE = 8000


class CallSession(CallWindows):
    def __init__(
        self,
        *,
        runtime: Runtime,
        agent: Any,
        call_id: str,
        custom_data: dict[str, Any],
        sink: AudioSink,
        close: Callable[[int, str], Awaitable[None]],
        input_rate: int = PHONE_RATE,
        observer: ConversationObserver | None = None,
        adjust_config: Callable[[SessionConfig], SessionConfig] | None = None,
        control: Any | None = None,
        whisper_endpoint: str | None = None,
    ) -> None:
        """``control`` hangs up / transfers the call (``hang_up()``, ``transfer(target, **options)``,
        ``aclose()``); by default a Twilio REST control when the settings hold credentials and ``custom_data`` a
        CallSid. ``whisper_endpoint``: our transfer-whisper URL as Twilio reaches it."""
        self.runtime = runtime
        self.agent = agent
        self.call_id = call_id
        self.custom_data = custom_data
        self._close = close
        self.input_rate = input_rate
        self.observer = observer or ConversationObserver()
        self._adjust_config = adjust_config
        self.ending = CallEnding(self, control)  # end_call / transfer_call, HangUp / Transfer, the control
        self.whisper_endpoint = whisper_endpoint
        self.keypad = KeypadTones(sink.sample_rate)
        self.config: SessionConfig | None = None
        self.history: list[dict[str, Any]] = []
        self.session_data: dict[str, Any] = {}
        self.events: EventDispatcher | None = None
        self.metrics = CallMetrics()
        self._loop = asyncio.get_running_loop()
        self._ready = False
        self._closed = False
        self._now = 0.0  # call clock: seconds of caller audio seen by the VAD
        self._tasks: set[asyncio.Task] = set()
        self._reply: _Reply | None = None  # the reply the caller hears now (kept by self.speaking)
        self.outbound = sink
        self.speaking = Speaking(self)  # the agent's replies in flight
        sink.on_turn_audible = self.speaking.segment_audible
        sink.on_turn_played = self.speaking.segment_played
        self._segmenter: VadSegmenter | None = None
        self.engine: TurnEngine | None = None
        self._agent_view: _CallAgent | None = None
        self.speech: CallSpeech | None = None
        self.listener: Listener | None = None  # the caller's words (STT), once the agent is configured
        # May a window be the caller's voice (line noise, the agent's echo)? Set up with the agent's config.
        self.gate = InboundGate(input_rate, sink.sample_rate, canceller=False, guard=False)
        self._eot: EndOfTurn | None = None  # when the end-of-turn model is asked about the caller's pauses
        self._classifier: Any = None  # the model it asks: the runtime's when the call was set up
        # The caller's audio on its way in (the hot path): ``on_audio`` for every frame, ``on_ulaw`` for a phone's.
        self.caller_audio = CallerAudio(self)
        self.on_audio = self.caller_audio.on_audio
        self.on_ulaw = self.caller_audio.on_ulaw
        self.ended_reason: str | None = None
        self.callee: CalleeWatch | None = None  # outbound: who answered (AMD verdict, beep)
        self._pending_verdicts: list[tuple[str, str]] = []
        self._quiet_path = True  # quiet windows take the short way through _on_window (tests compare both)
        self._quiet = False  # the last VAD window took it (the call may rest: see CallWindows._at_rest)

    # --- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._spawn(self._setup(), "setup")

    def _spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task:
        task = self._loop.create_task(coro, name=f"{self.call_id}:{what}",  # type: ignore[arg-type]
                                      context=call_context(self.call_id))  # its log lines carry the call's SID
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call %s: task %s failed", self.call_id, task.get_name(), exc_info=task.exception())

    async def _setup(self) -> None:
        try:
            self.config = await configure(self.agent, self.custom_data, call_id=self.call_id)
            if self._adjust_config is not None:
                self.config = self._adjust_config(self.config)
            # Phone audio (8 kHz μ-law both ways): cloud providers are asked for it natively.
            phone = self.input_rate == PHONE_RATE and self.outbound.sample_rate == PHONE_RATE
            self.speech = CallSpeech(self.runtime, self.config, call_id=self.call_id, input_rate=self.input_rate,
                                     phone=phone, output_rate=self.outbound.sample_rate)
            await self.speech.start()
        except Exception as exc:
            log.error("call %s: cannot start the agent: %s", self.call_id, exc)
            await self._close(1011, "agent configuration failed")
            return
        cfg = self.config
        self.session_data = cfg.session_data
        self.history = [dict(m) for m in cfg.initial_messages]
        self.events = EventDispatcher(self.agent, self.session_data, self.call_id)
        builtins = make_builtin_tools(cfg.builtin_tools, self, cfg.transfer_targets)
        self._agent_view = _CallAgent(self.agent, builtins)
        self.ending.configured()
        vad = cfg.vad
        self._segmenter = VadSegmenter(
            SegmenterParams(
                min_speech_duration=vad.min_speech_duration,
                min_silence_duration=vad.min_silence_duration,
                prefix_padding_duration=vad.prefix_padding_duration,
                max_buffered_speech=vad.max_buffered_speech,
                activation_threshold=vad.activation_threshold,
                sample_rate=vad.sample_rate,
            )
        )
        self.engine = TurnEngine(TurnParams.from_config(cfg))
        self.gate = InboundGate(
            self.input_rate, self.outbound.sample_rate, guard=cfg.echo_guard,
            canceller=cfg.echo_guard and cfg.echo_canceller and self.input_rate == self.outbound.sample_rate,
        )
        if cfg.end_of_turn_model and self.runtime.turn_classifier is not None:
            self._classifier = self.runtime.turn_classifier
            self._eot = EndOfTurn(cfg.end_of_turn_threshold, sample_rate=vad.sample_rate)
        speaking = self.speaking
        self.listener = Listener(
            call_id=self.call_id, speech=self.speech, engine=self.engine, vad_rate=vad.sample_rate,
            sink_rate=self.outbound.sample_rate, now=lambda: self._now, playing=lambda: self._reply,
            heard=speaking.heard, spawn=self._spawn, observe=self._observe, on_interim=self._on_interim,
            on_transcript=self._on_transcript, echo_possible=self.gate.echo_possible,
        )
        speaking.producer = ReplyProducer(
            call_id=self.call_id, config=cfg, speech=self.speech, agent=self._agent_view,
            sink_rate=self.outbound.sample_rate, history=lambda: self.history, session_data=lambda: self.session_data,
            spawn=self._spawn, fire=self._fire, observe=self._observe, feed=speaking.feed,
            play_tones=speaking.play_tones,
        )
        self.callee = CalleeWatch(self, outbound=first_speaker_waits("auto", self.custom_data),
                                  detect_beep=cfg.detect_beep, rate=self.input_rate)
        self.outbound.start()
        stream = self.runtime.vad_hub.open(vad.sample_rate, self._on_window)
        stream.rests = self._at_rest
        self.caller_audio.connect(stream, vad.sample_rate)
        self._ready = True
        # The callee speaks first: the greeting waits for them, so their early "hello" must count.
        wait = bool(cfg.first_message) and first_speaker_waits(cfg.first_speaker, self.custom_data)
        if wait:
            self._run_actions(self.engine.greet(
                cfg.first_message or "", self._now, wait_for_callee=True, timeout=cfg.callee_greeting_timeout,
                hold_long_greeting=bool(self.custom_data.get("amd")),
            ))
        self.caller_audio.replay_early()
        if cfg.first_message and not wait:
            self._run_actions(self.engine.greet(cfg.first_message))
        pending, self._pending_verdicts = self._pending_verdicts, []
        for verdict, source in pending:
            self.callee.verdict(verdict, source=source)

    def levels(self) -> tuple[float, float]:
        """RMS (0..1) of the caller's newest audio window and of the agent audio heard just now: the console's level
        meters, read a few times a second (never on the audio path)."""
        return math.sqrt(max(self.gate.noise.last, 0.0)), math.sqrt(max(self.speaking.level(), 0.0))

    @property
    def answered_by(self) -> str | None:
        return self.callee.answered_by if self.callee is not None else None

    def on_answered_by(self, verdict: str, *, source: str = "twilio") -> None:
        """Twilio's AMD verdict for this call (it may come before the agent is configured)."""
        if self._closed:
            return
        if self.callee is None:
            self._pending_verdicts.append((verdict, source))
        else:
            self.callee.verdict(verdict, source=source)

    async def aclose(self) -> None:
        """The caller hung up (or the socket died): stop everything this call started."""
        if self._closed:
            return
        self._closed = True
        self._ready = False
        self.caller_audio.close()
        await cancel_all(self._tasks, self.call_id)  # every one, even a task that swallows its cancel
        await self.outbound.aclose()
        if self.speech is not None:
            await self.speech.aclose()
        reply = self._reply
        if reply is not None and self.speaking.heard(reply) > 0:
            self.speaking.commit_cut_off(reply)
        self.metrics.echo_windows_suppressed = self.gate.echo_windows_suppressed
        self.metrics.noise_windows_refused = self.gate.noise.refused
        if self.events is not None:
            await self.events.aclose()
        await self.ending.aclose()

    # --- inbound ------------------------------------------------------------------------------------------
    def on_dtmf(self, digit: str) -> None:
        """The caller pressed a key: the agent's on_dtmf handler, then the turn engine (message or interrupt)."""
        log.info("call %s: DTMF %s", self.call_id, digit)
        if self._closed or self.engine is None or self.config is None:
            return
        if self.keypad.is_echo(digit, self._now):
            log.info("call %s: DTMF %s is our own tone coming back; ignored", self.call_id, digit)
            return
        self.metrics.events.append((self._now, "dtmf", digit))
        self._observe("dtmf", digit)
        handler = self.config.on_dtmf
        if handler is not None:
            self._spawn(self._run_handler(handler, {"digit": digit}), "on_dtmf")
        self._run_actions(self.engine.dtmf(digit, self._now))

    async def _run_handler(self, handler: Callable[..., Awaitable[Any]], extra: dict[str, Any]) -> None:
        try:
            await handler({"session_data": self.session_data, "call_id": self.call_id, **extra})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call %s: on_dtmf handler raised (the call goes on)", self.call_id)

    def _playout_restarts(self, base: int) -> None:
        """The reply the caller hears starts a segment at reply offset ``base``: the echo's playout clock too."""
        self.gate.restart(base, self.caller_audio.fed)

    # --- actions --------------------------------------------------------------------------------------------
    def _run_actions(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Notify):
                self._fire(action.event)
            elif isinstance(action, Transcribe):
                self.listener.transcribe(action)  # type: ignore[union-attr]  # set with the engine
            elif isinstance(action, StartReply):
                log.debug("call %s: %s reply %d starts at %.2f s", self.call_id, action.kind, action.turn_id, self._now)
                if self._eot is not None:
                    self._eot.turn_answered()
                self.speaking.start(action)
            elif isinstance(action, Settle):
                self.speaking.settle(action.turn_id)
            elif isinstance(action, CancelReply):
                self.speaking.drop(action.turn_id)
            elif isinstance(action, Pause):
                self.speaking.pause(action.turn_id)
            elif isinstance(action, Resume):
                self.speaking.resume(action.turn_id)
            elif isinstance(action, Interrupt):
                self._event("interrupt", str(action.turn_id))
                self.speaking.interrupt(action.turn_id)
            elif isinstance(action, (HangUp, Transfer)):
                self._spawn(self.ending.end(action), "end-call")

    def _event(self, kind: str, detail: str = "") -> None:
        self.metrics.events.append((self._now, kind, detail))
        call_event(kind)  # Prometheus: interrupt, resume
        log.debug("call %s: %s %s at %.2f s", self.call_id, kind, detail, self._now)

    def _observe(self, hook: str, *args: Any) -> None:
        try:
            getattr(self.observer, hook)(*args)
        except Exception:
            log.exception("call %s: observer hook %s failed", self.call_id, hook)

    def _fire(self, name: str, payload: dict | None = None) -> None:
        if self.events is not None:
            self.events.fire(name, payload)

    # --- the caller's words (from self.listener) ------------------------------------------------------------
    def _on_interim(self, utterance_id: int, text: str) -> None:
        if self._closed or self.engine is None:
            return
        self.metrics.interims += 1
        log.debug("call %s: interim %r at %.2f s", self.call_id, text, self._now)
        self._run_actions(self.engine.interim(utterance_id, text, self._now))

    def _on_transcript(self, utterance_id: int, text: str) -> None:
        assert self.engine is not None
        self._run_actions(self.engine.transcript(utterance_id, text, self._now))

    @property
    def early_stt_used(self) -> int:
        """Utterances whose transcript came from the early STT."""
        return self.listener.early_used if self.listener is not None else 0

    # --- turns driven by the client (realtime: input_audio_buffer.commit, response.create, response.cancel) -
    def commit_user_turn(self) -> None:
        """The client ended the user's turn. Closing silence is fed behind the audio received so far, so the VAD
        ends the utterance where it really ends, and the engine answers once it is transcribed, without waiting."""
        if self._closed or self.engine is None or self.config is None or self._segmenter is None:
            return
        behind = self.caller_audio.fed / self.input_rate - self._now  # audio the VAD has not seen yet
        if self._segmenter.speaking or self.engine.caller_speaking or behind > 0.1:
            pad = self.config.vad.min_silence_duration + 0.1
            self.on_audio(np.zeros(int(pad * self.input_rate), dtype=np.float32))
        self._run_actions(self.engine.commit(self._now))

    def request_reply(self) -> None:
        """The client asks for a reply (to the user's words, or with none new: the agent speaks on)."""
        if not self._closed and self.engine is not None:
            self._run_actions(self.engine.request_reply(self._now))

    def cancel_reply(self) -> None:
        """The client stops the reply under way; the user's words it answered stay in the history."""
        if self._closed or self.engine is None:
            return
        reply = self._reply
        actions = self.engine.cancel(self._now)
        self._run_actions(actions)
        if reply is not None and reply.user_text and any(isinstance(a, CancelReply) for a in actions):
            self.history.append({"role": "user", "content": reply.user_text})

    # --- the built-in tools (tools.CallActions: end_call and transfer_call are carried out by self.ending) ---
    def request_end_call(self, reason: str) -> None:
        """``end_call``: the current reply plays out, a goodbye only if the agent said nothing, then hang up."""
        self.ending.request_end_call(reason)

    def request_transfer(self, target: str, name: str) -> None:
        self.ending.request_transfer(target, name)

    async def send_dtmf(self, keys: str) -> bool:
        """``send_dtmf``: press ``keys`` (valid, normalised) in the reply whose LLM round called the tool."""
        reply = current_reply.get()
        if self._closed or reply is None or self.speaking.replies.get(reply.turn_id) is not reply:
            return False
        return await queue_tones(reply, self.keypad.make(keys))
