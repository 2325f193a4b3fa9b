"""One conversation (a phone call, or a realtime session): the asyncio shell around the sans-I/O parts.

Inbound audio goes float → (resample to the VAD rate) → the process-wide batched VAD. Per VAD window the
:class:`~telebridge.pipeline.echo.NoiseGate` and :class:`~telebridge.pipeline.echo.EchoGuard` decide whether it
may be the caller's voice (else the segmenter sees probability 0), the segmenter cuts utterances, and the
:class:`~telebridge.pipeline.turns.TurnEngine` turns everything into actions that this shell carries out:
transcriptions, replies, pauses, resumes, interruptions, hang-ups and transfers.

A reply streams the agent's LLM text through a sentence chunker into TTS; its audio is kept whole (at the sink's
rate) and fed to the :class:`~telebridge.pipeline.sink.AudioSink` in *segments*: a pause clears the sink and a
resume plays the rest from the heard position as a new segment (a new sink turn id, so the mark ledger never
confuses the flushed marks of the old segment with the new ones). Reply offsets = segment base + the segment's
heard samples.

Everything a call starts is owned by its :class:`CallSession` and cancelled by :meth:`CallSession.aclose`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import difflib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..agent import configure
from ..audio.resample import Resampler
from ..session import SessionConfig
from ..tools import make_builtin_tools
from .answering import CalleeWatch, first_speaker_waits
from .echo import EchoGuard, NoiseGate, PlayoutClock
from .events import EventDispatcher
from .interim import InterimTranscriber
from .keypad import KeypadTones, Tones, current_reply, queue_tones
from .llm import respond
from .observer import ConversationObserver
from .sentences import SentenceChunker
from .sink import AudioSink
from .speech import CallSpeech
from .turns import (
    CancelReply,
    HangUp,
    Interrupt,
    Notify,
    Pause,
    Resume,
    StartReply,
    Transcribe,
    Transfer,
    TurnEngine,
    TurnParams,
)
from .vad import SegmenterParams, SpeechEnded, SpeechStarted, VadSegmenter

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("telebridge.call")

PHONE_RATE = 8000
MAX_EARLY_AUDIO_SECONDS = 10.0  # buffer caller audio while configure_session runs
CUT_OFF_MARK = "…"
# Start transcribing once the caller has been quiet this long, before the VAD confirms the end of speech, so
# STT runs during the endpointing wait. If the caller speaks again, the early transcript is discarded.
EARLY_STT_AFTER = 0.2
# Words heard over the agent with less confidence than this are taken for noise (Whisper turns coughs and hums
# into "you", "them." and the like).
OVER_AGENT_MIN_LOGPROB = -1.0
# Silero confirms speech a window or three after the sound began; the caller's speech is counted (for the
# interruption time threshold) from the start of the run of voice-like windows that led to it, at most this early.
MAX_ONSET_BACKDATE = 0.25
# Words heard over the agent are its own echo when this share of them matches what it just said (2+ words).
ECHO_TEXT_SHARE = 0.6
ECHO_TEXT_MIN_WORDS = 2
# Agent audio longer than this arrives as one chunk (a whole sentence): it is resampled in a worker thread, since
# doing it on the event loop stalls every call's frames for tens of milliseconds under load.
THREAD_RESAMPLE_SECONDS = 0.5
# After a successful REST hang-up Twilio stops the stream itself; if it has not within this time, we close.
HANGUP_CLOSE_AFTER = 5.0


def normalise(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


class _AudioStore:
    """A reply's audio at the sink's rate, appended per sentence; kept whole so a pause can resume from any sample."""

    def __init__(self) -> None:
        self._buf = np.zeros(0, dtype=np.float32)
        self.size = 0

    def append(self, pcm: np.ndarray) -> None:
        need = self.size + len(pcm)
        if need > len(self._buf):
            grown = np.zeros(max(need, 2 * len(self._buf), 8000), dtype=np.float32)
            grown[: self.size] = self._buf[: self.size]
            self._buf = grown
        self._buf[self.size : need] = pcm
        self.size = need

    def view(self, start: int, end: int | None = None) -> np.ndarray:
        end = self.size if end is None else min(end, self.size)
        return self._buf[max(0, start) : max(0, end)]

    def mean_square(self, start: int, end: int) -> float:
        part = self.view(start, end)
        return float(np.dot(part, part)) / len(part) if len(part) else 0.0


@dataclass(slots=True)
class _Span:
    start: int  # sample offsets within the reply, at the sink's rate
    end: int
    text: str


@dataclass(slots=True)
class _Reply:
    turn_id: int
    user_text: str
    kind: str = "user"
    say: str | None = None
    task: asyncio.Task | None = None
    spans: list[_Span] = field(default_factory=list)
    audio: _AudioStore = field(default_factory=_AudioStore)
    enqueued: int = 0  # samples produced so far (reply offsets)
    text_done: bool = False
    user_index: int | None = None  # index of the user message in history (removed if the reply is dropped)
    said_from: int = 0  # spans before this index are already in the history (spoken before a tool round)
    timings: dict[str, float] = field(default_factory=dict)
    segment: int = 0  # the sink turn id now carrying this reply's audio
    base: int = 0  # reply offset where that segment starts
    paused: bool = False
    pause_task: asyncio.Task | None = None
    heard_at_pause: int = 0
    audible: bool = False
    segments: list[int] = field(default_factory=list)
    sentences: asyncio.Queue[Any] | None = None  # the producer's queue (keypad tones join it; see keypad.py)
    chunker: SentenceChunker | None = None

    @property
    def greeting(self) -> bool:
        return self.kind != "user"


@dataclass(slots=True)
class CallMetrics:
    """Per-turn latency split and turn-taking events, for the benchmarks, the tests and the logs."""

    turns: list[dict[str, float]] = field(default_factory=list)
    # (call time, kind, detail): pause / resume / interrupt / dtmf / reprompt / goodbye / hangup / transfer / ...
    events: list[tuple[float, str, str]] = field(default_factory=list)
    # One row per finished reply: turn, kind, samples (whole reply), heard (samples), text, cut_off.
    replies: list[dict[str, Any]] = field(default_factory=list)
    # One row per reply (greetings too): seconds from its first sentence reaching the TTS to the provider's first
    # audio (``tts``), and from that audio to the first media message sent (``bridge``). Benchmarks read these.
    speech: list[dict[str, float]] = field(default_factory=list)
    interims: int = 0
    echo_windows_suppressed: int = 0
    noise_windows_refused: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for _, k, _ in self.events if k == kind)


def heard_text(spans: list[_Span], heard: int) -> str:
    """The part of a reply the caller heard, from the played sample count (partial sentences by word share)."""
    words: list[str] = []
    for span in spans:
        if heard >= span.end:
            words.extend(span.text.split())
        elif heard > span.start:
            parts = span.text.split()
            share = (heard - span.start) / max(1, span.end - span.start)
            words.extend(parts[: int(len(parts) * share)])
            break
        else:
            break
    return " ".join(words)


class _CallAgent:
    """The agent as one call's LLM loop sees it: its handler, and its tools plus the opted-in built-ins."""

    def __init__(self, agent: Any, extra_tools: dict[str, Callable[..., Awaitable[str]]]) -> None:
        self.llm_response_handler = agent.llm_response_handler
        own = agent.tools_by_name
        for name in extra_tools.keys() & own.keys():
            log.warning("agent tool %r overrides the built-in tool of that name", name)
        self.tools_by_name = {**extra_tools, **own}


class CallSession:
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
        self._control = control
        self.whisper_endpoint = whisper_endpoint
        self.keypad = KeypadTones(sink.sample_rate)
        self.config: SessionConfig | None = None
        self.history: list[dict[str, Any]] = []
        self.session_data: dict[str, Any] = {}
        self.events: EventDispatcher | None = None
        self.metrics = CallMetrics()
        self._loop = asyncio.get_running_loop()
        self._early: list[np.ndarray] = []
        self._early_samples = 0
        self._ready = False
        self._closed = False
        self._now = 0.0  # call clock: seconds of caller audio seen by the VAD
        self._tasks: set[asyncio.Task] = set()
        self._reply: _Reply | None = None
        self._replies: dict[int, _Reply] = {}  # by reply turn id
        self._segments: dict[int, _Reply] = {}  # by sink turn id
        self.outbound = sink
        sink.on_turn_audible = self._on_segment_audible
        sink.on_turn_played = self._on_segment_played
        self._upsample: Resampler | None = None
        self._vad_stream: Any = None
        self._segmenter: VadSegmenter | None = None
        self.engine: TurnEngine | None = None
        self._agent_view: _CallAgent | None = None
        self.speech: CallSpeech | None = None
        self._utterance_span: tuple[float, float] = (0.0, 0.0)  # call-clock span of the utterance just ended
        self._interim_sent = ""
        self._speech_end_wall: float | None = None
        self._last_stt = 0.0
        self._early_stt: asyncio.Task | None = None  # speculative transcript of the current utterance
        self._early_stt_ready: asyncio.Task | None = None  # handed to the Transcribe action that follows
        self.early_stt_used = 0
        self._echo: EchoGuard | None = None
        self._noise = NoiseGate()
        self._playout = PlayoutClock(sink.sample_rate)
        self._fed = 0  # caller samples handed to the VAD (input rate): the call clock of the newest audio
        # (samples fed, heard position) noted as caller audio arrives while the agent is audible: the heard
        # position *as of* each window's audio, however late the batched VAD delivers the window.
        self._heard_log: collections.deque[tuple[int, int]] = collections.deque()
        self._heard_then = 0
        self._sound_since: float | None = None  # start of the current run of windows that passed the gates
        self._interim: InterimTranscriber | None = None
        self.ended_reason: str | None = None
        self.callee: CalleeWatch | None = None  # outbound: who answered (AMD verdict, beep)
        self._pending_verdicts: list[tuple[str, str]] = []

    # --- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._spawn(self._setup(), "setup")

    def _spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task:
        task = self._loop.create_task(coro, name=f"{self.call_id}:{what}")  # type: ignore[arg-type]
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
                                     phone=phone)
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
        if self._control is None:
            self._control = self._default_control()
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
        if cfg.echo_guard:
            self._echo = EchoGuard()
        self._interim = InterimTranscriber(
            self._interim_text, self._spawn, self._on_interim, sample_rate=vad.sample_rate
        )
        if vad.sample_rate != self.input_rate:
            self._upsample = Resampler(self.input_rate, vad.sample_rate)
        self.callee = CalleeWatch(self, outbound=first_speaker_waits("auto", self.custom_data),
                                  detect_beep=cfg.detect_beep, rate=self.input_rate)
        self.outbound.start()
        self._vad_stream = self.runtime.vad_hub.open(vad.sample_rate, self._on_window)
        self._ready = True
        # The callee speaks first: the greeting waits for them, so their early "hello" must count.
        wait = bool(cfg.first_message) and first_speaker_waits(cfg.first_speaker, self.custom_data)
        if wait:
            self._run_actions(self.engine.greet(
                cfg.first_message or "", self._now, wait_for_callee=True, timeout=cfg.callee_greeting_timeout,
                hold_long_greeting=bool(self.custom_data.get("amd")),
            ))
        early, self._early = self._early, []
        for pcm in early:
            self.on_audio(pcm)
        if cfg.first_message and not wait:
            self._run_actions(self.engine.greet(cfg.first_message))
        pending, self._pending_verdicts = self._pending_verdicts, []
        for verdict, source in pending:
            self.callee.verdict(verdict, source=source)

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

    def _default_control(self) -> Any | None:
        call_sid = str(self.custom_data.get("CallSid") or "")
        if not call_sid.startswith("CA"):
            return None
        from ..twilio.rest import TwilioCallControl

        return TwilioCallControl.from_settings(self.runtime.settings, call_sid, self.custom_data.get("AccountSid"))

    async def aclose(self) -> None:
        """The caller hung up (or the socket died): stop everything this call started."""
        if self._closed:
            return
        self._closed = True
        self._ready = False
        if self._vad_stream is not None:
            self._vad_stream.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.outbound.aclose()
        if self.speech is not None:
            await self.speech.aclose()
        reply = self._reply
        if reply is not None and self._heard(reply) > 0:
            self._commit_cut_off(reply)
        if self._echo is not None:
            self.metrics.echo_windows_suppressed = self._echo.suppressed
        self.metrics.noise_windows_refused = self._noise.refused
        if self.events is not None:
            await self.events.aclose()
        closer = getattr(self._control, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()

    # --- inbound (hot path) ---------------------------------------------------------------------------------
    def on_audio(self, pcm: np.ndarray) -> None:
        """Caller audio, float32 at ``input_rate``. Called for every frame: no awaits, no tasks."""
        if not self._ready:
            if not self._closed and self._early_samples < MAX_EARLY_AUDIO_SECONDS * self.input_rate:
                self._early.append(pcm)
                self._early_samples += len(pcm)
            return
        self._fed += len(pcm)
        if self.callee is not None:
            self.callee.feed(pcm)
        self.speech.feed(pcm)  # type: ignore[union-attr]  # ready implies started
        reply = self._reply
        if reply is not None and reply.audible and not reply.paused:
            self._heard_log.append((self._fed, reply.base + self.outbound.heard(reply.segment)))
        if self._upsample is not None:
            pcm = self._upsample.process(pcm)
        self._vad_stream.feed(pcm)

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

    def _on_window(self, prob: float, window: np.ndarray, end_time: float) -> None:
        if self._closed or self._segmenter is None or self.engine is None:
            return
        self._now = end_time
        engine = self.engine
        if self.keypad.pending or engine.floor_held:  # keypad tones in flight: no barge-in (see keypad.py)
            reply = self._reply
            heard = self._heard(reply) if reply is not None else 0
            engine.floor_held = self.keypad.holds_floor(reply.turn_id if reply else None, heard, end_time)
        # Gate: one energy per window, compared with the line's noise floor and with what the caller heard.
        energy = float(np.dot(window, window)) / len(window)
        voice = self._noise.push(energy)
        if self._echo is not None:
            voice = self._echo.push(energy, self._played_energy(end_time)) and voice
            engine.echo_active = self._echo.echo_active
        if not voice:
            self._sound_since = None
        elif self._sound_since is None:
            self._sound_since = end_time - len(window) / self._segmenter.params.sample_rate
        segmenter = self._segmenter
        actions = []
        for event in segmenter.push(prob if voice else 0.0, window, end_time):
            if isinstance(event, SpeechStarted):
                self._observe("user_speech_started", event.t)
                onset = event.t
                if self._sound_since is not None and event.t - MAX_ONSET_BACKDATE <= self._sound_since < event.t:
                    onset = self._sound_since
                actions += engine.speech_started(onset)
            elif isinstance(event, SpeechEnded):
                self._speech_end_wall = time.perf_counter() - (end_time - event.t)
                self._utterance_span = (event.t - len(event.audio) / segmenter.params.sample_rate, event.t)
                self._early_stt_ready, self._early_stt = self._early_stt, None
                self._observe("user_speech_stopped", event.t)
                actions += engine.speech_ended(event.t, event.audio)
        if segmenter.speaking:
            quiet = segmenter.silence_duration
            if quiet == 0.0:
                engine.speech_continues(end_time)
            if quiet == 0.0 and self._early_stt is not None:
                self._early_stt.cancel()  # the caller went on talking: that transcript is stale
                self._early_stt = None
            elif quiet >= EARLY_STT_AFTER and self._early_stt is None and not self._streaming:
                self._early_stt = self._spawn(self._stt_text(segmenter.snapshot()), "early-stt")
            uid = engine.current_utterance
            if uid is not None and engine.wants_interim:
                if self._streaming:
                    self._poll_stream_interim(uid, engine.current_start, end_time)
                elif self._interim is not None:
                    self._interim.poll(end_time, uid, engine.current_start, segmenter.snapshot)
        actions += engine.tick(end_time)
        if actions:
            self._run_actions(actions)

    def _played_energy(self, t: float) -> float:
        """Mean-square energy of the agent audio the caller heard during the window ending at ``t``."""
        reply = self._reply
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

    # --- actions --------------------------------------------------------------------------------------------
    def _run_actions(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Notify):
                self._fire(action.event)
            elif isinstance(action, Transcribe):
                early, self._early_stt_ready = self._early_stt_ready, None
                self._interim_sent = ""
                self._spawn(self._transcribe(action.utterance_id, action.audio, early, self._utterance_span),
                            f"stt{action.utterance_id}")
            elif isinstance(action, StartReply):
                self._start_reply(action)
            elif isinstance(action, CancelReply):
                self._drop_reply(action.turn_id)
            elif isinstance(action, Pause):
                self._pause(action.turn_id)
            elif isinstance(action, Resume):
                self._resume(action.turn_id)
            elif isinstance(action, Interrupt):
                self._event("interrupt", str(action.turn_id))
                self._interrupt(action.turn_id)
            elif isinstance(action, (HangUp, Transfer)):
                self._spawn(self._end_call(action), "end-call")

    def _event(self, kind: str, detail: str = "") -> None:
        self.metrics.events.append((self._now, kind, detail))
        log.debug("call %s: %s %s at %.2f s", self.call_id, kind, detail, self._now)

    def _observe(self, hook: str, *args: Any) -> None:
        try:
            getattr(self.observer, hook)(*args)
        except Exception:
            log.exception("call %s: observer hook %s failed", self.call_id, hook)

    def _fire(self, name: str, payload: dict | None = None) -> None:
        if self.events is not None:
            self.events.fire(name, payload)

    # --- speech to text -------------------------------------------------------------------------------------
    @property
    def _streaming(self) -> bool:
        return self.speech is not None and self.speech.streaming

    def _poll_stream_interim(self, utterance_id: int, start: float, now: float) -> None:
        """A streaming STT's interim words for the current utterance, handed to the engine when they change."""
        text = self.speech.interim_words(start - 0.1, now)  # type: ignore[union-attr]
        if text is None or text == self._interim_sent:
            return
        self._interim_sent = text
        text = self._not_our_words(text)
        if text:
            self._on_interim(utterance_id, text)

    async def _recognise(self, audio: np.ndarray, span: tuple[float, float] | None = None) -> Any | None:
        """Transcribe an utterance: by its call-clock ``span`` from a streaming STT, else its audio."""
        assert self.config is not None and self.speech is not None
        rate = self.config.vad.sample_rate
        if span is None:
            end = self._now
            span = (end - len(audio) / rate, end)
        return await self.speech.transcribe(audio, rate, *span)

    async def _stt_text(self, audio: np.ndarray) -> Any | None:
        return await self._recognise(audio)

    @staticmethod
    def _confident(transcript: Any) -> str:
        if transcript is None:
            return ""
        logprob = getattr(transcript, "avg_logprob", None)
        if logprob is not None and logprob < OVER_AGENT_MIN_LOGPROB:
            return ""
        return str(transcript.text)

    async def _interim_text(self, audio: np.ndarray) -> str:
        return self._not_our_words(self._confident(await self._recognise(audio)))

    def _not_our_words(self, text: str) -> str:
        """Words heard over the agent that are mostly the agent's own recent words are its echo, not the caller."""
        reply = self._reply
        words = normalise(text)
        if reply is None or len(words) < ECHO_TEXT_MIN_WORDS:
            return text
        heard, rate = self._heard(reply), self.outbound.sample_rate
        recent = [s.text for s in reply.spans if s.start <= heard + rate and s.end >= heard - 8 * rate]
        matcher = difflib.SequenceMatcher(None, words, normalise(" ".join(recent)), autojunk=False)
        matched = sum(block.size for block in matcher.get_matching_blocks())
        if matched >= ECHO_TEXT_SHARE * len(words):
            log.debug("call %s: %r is the agent's own echo", self.call_id, text)
            return ""
        return text

    def _on_interim(self, utterance_id: int, text: str) -> None:
        if self._closed or self.engine is None:
            return
        self.metrics.interims += 1
        self._run_actions(self.engine.interim(utterance_id, text, self._now))

    async def _transcribe(
        self, utterance_id: int, audio: np.ndarray, early: asyncio.Task | None, span: tuple[float, float]
    ) -> None:
        assert self.engine is not None
        started = time.perf_counter()
        transcript: Any | None = None
        used_early = False
        if early is not None:
            # Only silence followed the early snapshot, so its transcript is the whole utterance's.
            await asyncio.wait({early})  # our own cancellation still propagates; early's does not
            if not early.cancelled():
                transcript = early.result()
                used_early = True
                self.early_stt_used += 1
        if not used_early:
            transcript = await self._recognise(audio, span)
        self._last_stt = time.perf_counter() - started
        if self.engine.is_over_agent(utterance_id):
            text = self._not_our_words(self._confident(transcript))
        else:
            text = str(transcript.text) if transcript is not None else ""
        if text.strip():
            self._observe("user_transcript", text.strip())
        log.debug("call %s: heard %r (%.0f ms STT)", self.call_id, text, 1000 * self._last_stt)
        self._run_actions(self.engine.transcript(utterance_id, text, self._now))

    # --- replies --------------------------------------------------------------------------------------------
    def _start_reply(self, action: StartReply) -> None:
        turn_id, user_text = action.turn_id, action.text
        reply = _Reply(turn_id, user_text, kind=action.kind, say=action.say, segment=turn_id, segments=[turn_id])
        reply.timings["speech_end"] = self._speech_end_wall or time.perf_counter()
        reply.timings["stt"] = self._last_stt
        reply.timings["start"] = time.perf_counter()
        if user_text:
            message = {"role": "user", "content": user_text}
            reply.user_index = len(self.history)
            self.history.append(message)
            self._fire("on_user_message_added", {"message": message})
        if action.kind in ("reprompt", "goodbye"):
            self._event(action.kind, action.say or "")
            if action.kind == "goodbye":
                self._observe("call_ending", self.ended_reason or "goodbye")
        self._reply = reply
        self._replies[turn_id] = reply
        self._segments[turn_id] = reply
        self._observe("reply_started", turn_id)
        reply.task = self._spawn(self._produce(reply), f"reply{turn_id}")

    def _feed(self, reply: _Reply, pcm: np.ndarray) -> None:
        """New reply audio: keep it, and send it unless the reply is paused."""
        reply.audio.append(pcm)
        if not reply.paused:
            self.outbound.enqueue(reply.segment, pcm)

    async def _produce(self, reply: _Reply) -> None:
        """LLM text (or fixed text) → sentences → TTS → the sink's rate → the reply's audio, one sentence at a time."""
        assert self.config is not None and self._agent_view is not None and self.speech is not None
        speech = self.speech
        rate = speech.sample_rate
        resampler = Resampler(rate, self.outbound.sample_rate)
        sentences: asyncio.Queue[str | Tones | None] = asyncio.Queue(maxsize=8)
        reply.sentences = sentences
        agent_view = self._agent_view

        async def text_source() -> None:
            chunker = reply.chunker = SentenceChunker()
            current_reply.set(reply)  # the send_dtmf tool queues its tones in this reply
            try:
                if reply.say is not None:
                    for piece in chunker.push(reply.say) + chunker.flush():
                        await sentences.put(piece)
                else:
                    await llm_text(chunker)
            except BaseException:
                # Cancelled or failed: never block here, nobody may be reading the queue any more.
                with contextlib.suppress(asyncio.QueueFull):
                    sentences.put_nowait(None)
                raise
            await sentences.put(None)

        async def llm_text(chunker: SentenceChunker) -> None:
            def on_event(name: str, payload: dict) -> None:
                if name == "on_function_calls_executed":
                    # Text streamed before the tool round is stored with its tool-call message already.
                    reply.said_from = len(reply.spans)
                self._fire(name, payload)

            stream = respond(
                agent_view,  # type: ignore[arg-type]
                self.history,
                self.session_data,
                call_id=self.call_id,
                max_nested_function_calls=self.config.max_nested_function_calls,
                on_event=on_event,
            )
            first = True
            async with contextlib.aclosing(stream):
                async for delta in stream:
                    if first:
                        reply.timings["llm_first_token"] = time.perf_counter()
                        first = False
                    for piece in chunker.push(delta):
                        await sentences.put(piece)
            for piece in chunker.flush():
                await sentences.put(piece)

        source = self._spawn(text_source(), f"llm{reply.turn_id}")
        try:
            while (sentence := await sentences.get()) is not None:
                if isinstance(sentence, Tones):
                    self._play_tones(reply, sentence)
                    continue
                reply.timings.setdefault("tts_request", time.perf_counter())
                span: _Span | None = None
                # Each chunk goes out as it arrives: a streaming provider's first bytes reach the caller at once.
                async for chunk, chunk_rate in speech.speak(sentence, reply.turn_id):
                    if "tts_first_audio" not in reply.timings:
                        reply.timings["tts_first_audio"] = time.perf_counter()
                    if chunk_rate != rate:  # a fallback provider took over mid-reply
                        rate, resampler = chunk_rate, Resampler(chunk_rate, self.outbound.sample_rate)
                    if len(chunk) > rate * THREAD_RESAMPLE_SECONDS:  # a whole sentence at once (Piper, Google)
                        pcm = np.asarray(await asyncio.to_thread(resampler.process, chunk), dtype=np.float32)
                    else:
                        pcm = np.asarray(resampler.process(chunk), dtype=np.float32)
                    if not len(pcm):
                        continue
                    if span is None:
                        self._observe("reply_text", reply.turn_id, sentence, reply.enqueued)
                        span = _Span(reply.enqueued, reply.enqueued, sentence)
                        reply.spans.append(span)
                    span.end += len(pcm)
                    reply.enqueued += len(pcm)
                    self._feed(reply, pcm)
            await source  # surfaces LLM errors
            await speech.end_reply(reply.turn_id)
        except asyncio.CancelledError:
            source.cancel()
            raise
        except Exception:
            log.exception("call %s: reply %d failed; the call goes on", self.call_id, reply.turn_id)
            source.cancel()
        reply.text_done = True
        if not reply.paused and self.outbound.finish_turn(reply.segment):
            self._on_segment_played(reply.segment)

    def _on_segment_audible(self, segment: int) -> None:
        reply = self._segments.get(segment)
        if reply is None or segment != reply.segment:
            return
        if reply is self._reply:
            self._heard_log.clear()
            self._heard_then = reply.base
            self._playout.reset(reply.base, self._fed / self.input_rate)
        if reply.audible:
            return
        reply.audible = True
        reply.timings["first_audio"] = time.perf_counter()
        self._record_latency(reply)
        if self.engine is not None:
            self._run_actions(self.engine.reply_audio_started(reply.turn_id, self._now))
        self._fire("on_agent_started_speaking")

    def _record_latency(self, reply: _Reply) -> None:
        t = reply.timings
        if "tts_request" in t and "tts_first_audio" in t:
            self.metrics.speech.append({"turn": reply.turn_id, "tts": t["tts_first_audio"] - t["tts_request"],
                                        "bridge": t["first_audio"] - t["tts_first_audio"]})
        if reply.greeting or "speech_end" not in t:
            return
        llm_first = t.get("llm_first_token", t["start"])
        row = {
            "total": t["first_audio"] - t["speech_end"],
            # From the end of speech to the reply starting, minus what STT added beyond the endpointing wait.
            "endpointing": t["start"] - t["speech_end"],
            "stt": t.get("stt", 0.0),
            "llm_first_token": llm_first - t["start"],
            "tts_first_audio": t.get("tts_first_audio", t["first_audio"]) - llm_first,
            "send": t["first_audio"] - t.get("tts_first_audio", t["first_audio"]),
        }
        self.metrics.turns.append(row)
        log.info(
            "call %s: turn %d latency %.0f ms (endpointing+STT %.0f, STT %.0f, LLM first token %.0f, TTS %.0f)",
            self.call_id, reply.turn_id, *(1000 * row[k] for k in ("total", "endpointing", "stt", "llm_first_token", "tts_first_audio")),
        )

    def _on_segment_played(self, segment: int) -> None:
        """Every sample of a sink segment has played. Stale segments (paused, then resumed) are ignored."""
        reply = self._segments.get(segment)
        if reply is None or segment != reply.segment or reply.paused or not reply.text_done:
            return
        self._turn_played(reply)

    def _turn_played(self, reply: _Reply) -> None:
        """Every sample of the reply has played at the caller's end."""
        if self._replies.pop(reply.turn_id, None) is None:
            return
        text = " ".join(s.text for s in reply.spans[reply.said_from :]).strip()
        if text:
            message = {"role": "assistant", "content": text}
            self.history.append(message)
            self._fire("on_agent_message_added", {"message": message})
            self._fire("on_agent_stopped_speaking")
        self._observe("reply_done", reply.turn_id, " ".join(s.text for s in reply.spans).strip())
        self._record_reply(reply, reply.enqueued, False)
        self._forget_segments(reply)
        if self._reply is reply:
            self._reply = None
        if self.engine is not None:
            self._run_actions(self.engine.agent_finished(reply.turn_id, self._now))

    def _record_reply(self, reply: _Reply, heard: int, cut_off: bool) -> None:
        self.metrics.replies.append({
            "turn": reply.turn_id, "kind": reply.kind, "samples": reply.enqueued, "heard": heard,
            "text": " ".join(s.text for s in reply.spans), "cut_off": cut_off, "segments": len(reply.segments),
        })

    def _forget_segments(self, reply: _Reply) -> None:
        for segment in reply.segments:
            self._segments.pop(segment, None)
            self.outbound.forget_turn(segment)

    def _drop_reply(self, turn_id: int) -> None:
        """The caller kept talking before hearing any of this reply: forget it entirely."""
        reply = self._replies.pop(turn_id, None)
        if reply is None:
            return
        if reply.task:
            self._cancel_at_provider(reply)  # before the task: see _cancel_at_provider
            reply.task.cancel()
        self.outbound.drop_turn(reply.segment)
        self._forget_segments(reply)
        self._observe("reply_dropped", turn_id)
        if reply.user_index is not None and reply.user_index < len(self.history):
            # the user's words are merged into the next turn by the engine
            if self.history[reply.user_index].get("content") == reply.user_text:
                del self.history[reply.user_index :]
        if self._reply is reply:
            self._reply = None

    def _heard(self, reply: _Reply) -> int:
        if reply.paused:
            return reply.heard_at_pause
        return reply.base + self.outbound.heard(reply.segment)

    # --- pause, resume, interrupt ---------------------------------------------------------------------------
    def _pause(self, turn_id: int) -> None:
        """Stop at once and clear the far end's buffer, keeping the reply (and its production) alive."""
        reply = self._replies.get(turn_id)
        if reply is None or reply.paused:
            return
        reply.paused = True
        reply.heard_at_pause = reply.base + self.outbound.heard(reply.segment)
        self.outbound.drop_turn(reply.segment)
        reply.pause_task = self._spawn(self._clear_for_pause(reply), f"pause{turn_id}")

    async def _clear_for_pause(self, reply: _Reply) -> None:
        await self.outbound.clear()
        reply.heard_at_pause = max(reply.heard_at_pause, reply.base + self.outbound.heard(reply.segment))
        self._event("pause", f"{reply.turn_id}@{reply.heard_at_pause}")
        self._observe("reply_paused", reply.turn_id, reply.heard_at_pause)

    def _resume(self, turn_id: int) -> None:
        reply = self._replies.get(turn_id)
        if reply is None or not reply.paused:
            return
        self._spawn(self._resume_after_pause(reply), f"resume{turn_id}")

    async def _resume_after_pause(self, reply: _Reply) -> None:
        if reply.pause_task is not None:
            await asyncio.wait({reply.pause_task})
        if not reply.paused or reply.turn_id not in self._replies or self.engine is None:
            return
        start = reply.heard_at_pause
        segment = self.engine.new_turn_id()
        reply.segment, reply.base, reply.paused = segment, start, False
        reply.segments.append(segment)
        self._segments[segment] = reply
        self._event("resume", f"{reply.turn_id}@{start}")
        self._observe("reply_resumed", reply.turn_id, start)
        rest = reply.audio.view(start)
        if len(rest):
            self.outbound.enqueue(segment, rest.copy())
        if reply.text_done and self.outbound.finish_turn(segment):
            self._on_segment_played(segment)

    def _interrupt(self, turn_id: int) -> None:
        """Commit a barge-in now: the history gets the heard part before the caller's next words, whatever the
        socket does; stopping the audio (if not paused already) and cancelling the reply's work follow."""
        reply = self._replies.pop(turn_id, None)
        if reply is None:
            return
        if reply.task:
            self._cancel_at_provider(reply)  # before the task: see _cancel_at_provider
            reply.task.cancel()
        if not reply.paused:
            # Marks echoed after this instant may still be credited to audio that Twilio flushes; taking the
            # position now errs on the side of "not heard", never the other way round.
            reply.heard_at_pause = reply.base + self.outbound.heard(reply.segment)
            reply.paused = True
            self.outbound.drop_turn(reply.segment)
            self._spawn(self.outbound.clear(), f"clear{turn_id}")
        if self._reply is reply:
            self._reply = None
        message = self._commit_cut_off(reply)
        self._record_reply(reply, reply.heard_at_pause, True)
        self._forget_segments(reply)
        self._observe("reply_interrupted", turn_id, message["content"])
        self._fire("on_agent_interrupted", {"message": message})
        self._fire("on_agent_stopped_speaking")

    def _cancel_at_provider(self, reply: _Reply) -> None:
        """A cancelled reply's synthesis stops at the provider too (Clear, close the context), not only here.

        Called *before* the reply's task is cancelled: the cancel task is scheduled first, so the TTS session
        still knows the sentence in flight when it runs. The other way round, the reply task's cancellation
        unwinds the session's stream first (its ``finally`` forgets the sentence), and the session has nothing
        left to stop -- on Python 3.12+ always, on 3.11 only thanks to ``wait_for``'s extra loop steps."""
        if self.speech is not None and not reply.text_done:
            self._spawn(self.speech.cancel_reply(reply.turn_id), f"tts-cancel{reply.turn_id}")

    def _commit_cut_off(self, reply: _Reply) -> dict[str, str]:
        """Keep in the history only what the caller heard, marked as cut off."""
        heard = heard_text(reply.spans, self._heard(reply))
        already = " ".join(s.text for s in reply.spans[: reply.said_from])
        if already and heard.startswith(already):
            heard = heard[len(already) :].strip()
        message = {"role": "assistant", "content": (heard + CUT_OFF_MARK) if heard else CUT_OFF_MARK}
        if unplayed := self.keypad.unplayed(reply.turn_id, self._heard(reply)):
            message["content"] += f" [cut off before the keypad tones {unplayed} were sent: nothing was pressed]"
        self.history.append(message)
        return message

    # --- turns driven by the client (realtime: input_audio_buffer.commit, response.create, response.cancel) -
    def commit_user_turn(self) -> None:
        """The client ended the user's turn. Closing silence is fed behind the audio received so far, so the VAD
        ends the utterance where it really ends, and the engine answers once it is transcribed, without waiting."""
        if self._closed or self.engine is None or self.config is None or self._segmenter is None:
            return
        behind = self._fed / self.input_rate - self._now  # audio the VAD has not seen yet
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

    # --- winding down (built-in tools and the engine's HangUp / Transfer) -----------------------------------
    def request_end_call(self, reason: str) -> None:
        """``end_call``: the current reply plays out, a goodbye only if the agent said nothing, then hang up."""
        if self.engine is None or self.config is None:
            return
        self.ended_reason = "end_call"
        self._event("end_call", reason)
        self._run_actions(
            self.engine.request_end(self._now, "end_call", say=self.config.goodbye_message, only_if_silent=True)
        )

    def request_transfer(self, target: str, name: str) -> None:
        if self.engine is None or self.config is None:
            return
        self.ended_reason = "transfer_call"
        self._event("transfer_call", name)
        self._run_actions(
            self.engine.request_end(
                self._now, "transfer_call", say=self.config.transfer_message, only_if_silent=True,
                transfer_to=target,
            )
        )

    async def send_dtmf(self, keys: str) -> bool:
        """``send_dtmf``: press ``keys`` (valid, normalised) in the reply whose LLM round called the tool."""
        reply = current_reply.get()
        if self._closed or reply is None or self._replies.get(reply.turn_id) is not reply:
            return False
        return await queue_tones(reply, self.keypad.make(keys))

    def _play_tones(self, reply: _Reply, tones: Tones) -> None:
        start = reply.enqueued
        reply.enqueued += len(tones.audio)
        self.keypad.placed(reply.turn_id, start, reply.enqueued, tones.keys)
        self._event("send_dtmf", tones.keys)
        self._feed(reply, tones.audio)

    async def _end_call(self, action: HangUp | Transfer) -> None:
        control = self._control
        self.ended_reason = self.ended_reason or action.reason
        if isinstance(action, Transfer):
            from ..twilio.transfer import transfer_options

            self._event("transfer", action.target)
            self._observe("call_ending", "transfer_call")
            options = transfer_options(self.config, self.custom_data, self.runtime.settings, self.whisper_endpoint)
            ok = control is not None and await control.transfer(action.target, **options)
            if not ok:
                log.error("call %s: transfer to %s failed; hanging up", self.call_id, action.target)
        else:
            self._event("hangup", action.reason)
            self._observe("call_ending", action.reason)
            ok = control is not None and await control.hang_up()
        if ok:
            await asyncio.sleep(HANGUP_CLOSE_AFTER)  # Twilio stops the stream; this is only a safety net
        await self._close(1000, "call ended")
