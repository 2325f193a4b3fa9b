"""One phone call: the asyncio shell around the sans-I/O parts.

Inbound audio goes μ-law → float → (8→16 kHz) → the process-wide batched VAD. VAD windows drive the
:class:`~telebridge.pipeline.turns.TurnEngine` (their end times are the call's clock); its actions start
transcriptions and replies. A reply streams the agent's LLM text through a sentence chunker into TTS, and the
audio into :class:`~telebridge.pipeline.outbound.OutboundAudio`, which paces it to Twilio with named marks.

Everything a call starts is owned by its :class:`CallSession` and cancelled by :meth:`CallSession.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..agent import configure
from ..audio.resample import Resampler, resample_once
from ..session import SessionConfig
from .events import EventDispatcher
from .llm import respond
from .observer import ConversationObserver
from .sentences import SentenceChunker
from .sink import AudioSink
from .turns import CancelReply, Interrupt, Notify, StartReply, Transcribe, TurnEngine, TurnParams
from .vad import SegmenterParams, SpeechEnded, SpeechStarted, VadSegmenter

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("telebridge.call")

PHONE_RATE = 8000
STT_RATE = 16000
MAX_EARLY_AUDIO_SECONDS = 10.0  # buffer caller audio while configure_session runs
CUT_OFF_MARK = "…"
# Start transcribing once the caller has been quiet this long, before the VAD confirms the end of speech, so
# STT runs during the endpointing wait. If the caller speaks again, the early transcript is discarded.
EARLY_STT_AFTER = 0.2


@dataclass(slots=True)
class _Span:
    start: int  # sample offsets within the reply, at 8 kHz
    end: int
    text: str


@dataclass(slots=True)
class _Reply:
    turn_id: int
    user_text: str
    task: asyncio.Task | None = None
    spans: list[_Span] = field(default_factory=list)
    enqueued: int = 0  # samples handed to the sender
    text_done: bool = False
    user_index: int | None = None  # index of the user message in history (removed if the reply is dropped)
    greeting: bool = False
    said_from: int = 0  # spans before this index are already in the history (spoken before a tool round)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class CallMetrics:
    """Per-turn latency split, in seconds, for the benchmarks and the logs."""

    turns: list[dict[str, float]] = field(default_factory=list)


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
    ) -> None:
        self.runtime = runtime
        self.agent = agent
        self.call_id = call_id
        self.custom_data = custom_data
        self._close = close
        self.input_rate = input_rate
        self.observer = observer or ConversationObserver()
        self._adjust_config = adjust_config
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
        self._replies: dict[int, _Reply] = {}
        self.outbound = sink
        sink.on_turn_audible = self._on_turn_audible
        sink.on_turn_played = self._turn_played
        self._upsample: Resampler | None = None
        self._vad_stream: Any = None
        self._segmenter: VadSegmenter | None = None
        self.engine: TurnEngine | None = None
        self._stt: Any = None
        self._tts: Any = None
        self._speech_end_wall: float | None = None
        self._early_stt: asyncio.Task | None = None  # speculative transcript of the current utterance
        self._early_stt_ready: asyncio.Task | None = None  # handed to the Transcribe action that follows
        self.early_stt_used = 0

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
            self._stt = await self.runtime.stt_for(self.config.stt)
            self._tts = await self.runtime.tts_for(self.config.tts)
        except Exception as exc:
            log.error("call %s: cannot start the agent: %s", self.call_id, exc)
            await self._close(1011, "agent configuration failed")
            return
        cfg = self.config
        self.session_data = cfg.session_data
        self.history = [dict(m) for m in cfg.initial_messages]
        self.events = EventDispatcher(self.agent, self.session_data, self.call_id)
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
        self.engine = TurnEngine(
            TurnParams(
                min_silence_duration=vad.min_silence_duration,
                min_endpointing_delay=cfg.min_endpointing_delay,
                allow_interruptions=cfg.allow_interruptions,
                interrupt_time_threshold=cfg.interrupt_time_threshold,
            )
        )
        if vad.sample_rate != self.input_rate:
            self._upsample = Resampler(self.input_rate, vad.sample_rate)
        self.outbound.start()
        self._vad_stream = self.runtime.vad_hub.open(vad.sample_rate, self._on_window)
        self._ready = True
        early, self._early = self._early, []
        for pcm in early:
            self.on_audio(pcm)
        if cfg.first_message:
            self._run_actions([self.engine.start_reply("")], greeting=cfg.first_message)

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
        if self._reply is not None and self.outbound.heard(self._reply.turn_id) > 0:
            self._commit_cut_off(self._reply)
        if self.events is not None:
            await self.events.aclose()

    # --- inbound (hot path) ---------------------------------------------------------------------------------
    def on_audio(self, pcm: np.ndarray) -> None:
        """Caller audio, float32 at ``input_rate``. Called for every frame: no awaits, no tasks."""
        if not self._ready:
            if not self._closed and self._early_samples < MAX_EARLY_AUDIO_SECONDS * self.input_rate:
                self._early.append(pcm)
                self._early_samples += len(pcm)
            return
        if self._upsample is not None:
            pcm = self._upsample.process(pcm)
        self._vad_stream.feed(pcm)

    def on_dtmf(self, digit: str) -> None:
        log.info("call %s: DTMF %s", self.call_id, digit)

    def _on_window(self, prob: float, window: np.ndarray, end_time: float) -> None:
        if self._closed or self._segmenter is None or self.engine is None:
            return
        self._now = end_time
        segmenter = self._segmenter
        actions = []
        for event in segmenter.push(prob, window, end_time):
            if isinstance(event, SpeechStarted):
                self._observe("user_speech_started", event.t)
                actions += self.engine.speech_started(event.t)
            elif isinstance(event, SpeechEnded):
                self._speech_end_wall = time.perf_counter() - (end_time - event.t)
                self._early_stt_ready, self._early_stt = self._early_stt, None
                self._observe("user_speech_stopped", event.t)
                actions += self.engine.speech_ended(event.t, event.audio)
        if segmenter.speaking:
            quiet = segmenter.silence_duration
            if quiet == 0.0 and self._early_stt is not None:
                self._early_stt.cancel()  # the caller went on talking: that transcript is stale
                self._early_stt = None
            elif quiet >= EARLY_STT_AFTER and self._early_stt is None:
                self._early_stt = self._spawn(self._stt_text(segmenter.snapshot()), "early-stt")
        actions += self.engine.tick(end_time)
        if actions:
            self._run_actions(actions)

    # --- actions --------------------------------------------------------------------------------------------
    def _run_actions(self, actions: list[Any], greeting: str | None = None) -> None:
        for action in actions:
            if isinstance(action, Notify):
                self._fire(action.event)
            elif isinstance(action, Transcribe):
                early, self._early_stt_ready = self._early_stt_ready, None
                self._spawn(self._transcribe(action.utterance_id, action.audio, early), f"stt{action.utterance_id}")
            elif isinstance(action, StartReply):
                self._start_reply(action.turn_id, action.text, greeting)
            elif isinstance(action, CancelReply):
                self._drop_reply(action.turn_id)
            elif isinstance(action, Interrupt):
                self._spawn(self._interrupt(action.turn_id), f"interrupt{action.turn_id}")

    def _observe(self, hook: str, *args: Any) -> None:
        try:
            getattr(self.observer, hook)(*args)
        except Exception:
            log.exception("call %s: observer hook %s failed", self.call_id, hook)

    def _fire(self, name: str, payload: dict | None = None) -> None:
        if self.events is not None:
            self.events.fire(name, payload)

    async def _stt_text(self, audio: np.ndarray) -> str:
        assert self.config is not None
        if self.config.vad.sample_rate != STT_RATE:
            audio = resample_once(audio, self.config.vad.sample_rate, STT_RATE)
        try:
            transcript = await self._stt.transcribe(audio)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call %s: STT failed; the utterance is dropped", self.call_id)
            return ""
        return transcript.text

    async def _transcribe(self, utterance_id: int, audio: np.ndarray, early: asyncio.Task | None) -> None:
        assert self.engine is not None
        started = time.perf_counter()
        text: str | None = None
        if early is not None:
            # Only silence followed the early snapshot, so its transcript is the whole utterance's.
            await asyncio.wait({early})  # our own cancellation still propagates; early's does not
            if not early.cancelled():
                text = early.result()
                self.early_stt_used += 1
        if text is None:
            text = await self._stt_text(audio)
        self._last_stt = time.perf_counter() - started
        if text.strip():
            self._observe("user_transcript", text.strip())
        log.debug("call %s: heard %r (%.0f ms STT)", self.call_id, text, 1000 * self._last_stt)
        self._run_actions(self.engine.transcript(utterance_id, text, self._now))

    def _start_reply(self, turn_id: int, user_text: str, greeting: str | None) -> None:
        reply = _Reply(turn_id, user_text, greeting=greeting is not None)
        reply.timings["speech_end"] = self._speech_end_wall or time.perf_counter()
        reply.timings["stt"] = getattr(self, "_last_stt", 0.0)
        reply.timings["start"] = time.perf_counter()
        if user_text:
            message = {"role": "user", "content": user_text}
            reply.user_index = len(self.history)
            self.history.append(message)
            self._fire("on_user_message_added", {"message": message})
        self._reply = reply
        self._replies[turn_id] = reply
        self._observe("reply_started", turn_id)
        reply.task = self._spawn(self._produce(reply, greeting), f"reply{turn_id}")

    async def _produce(self, reply: _Reply, greeting: str | None) -> None:
        """LLM text → sentences → TTS → 8 kHz μ-law → the sender, one sentence at a time."""
        assert self.config is not None
        resampler = Resampler(self._tts.sample_rate, self.outbound.sample_rate)
        sentences: asyncio.Queue[str | None] = asyncio.Queue(maxsize=8)

        async def text_source() -> None:
            chunker = SentenceChunker()
            try:
                if greeting is not None:
                    pieces: list[str] = chunker.push(greeting) + chunker.flush()
                    for piece in pieces:
                        await sentences.put(piece)
                    return
                def on_event(name: str, payload: dict) -> None:
                    if name == "on_function_calls_executed":
                        # Text streamed before the tool round is stored with its tool-call message already.
                        reply.said_from = len(reply.spans)
                    self._fire(name, payload)

                stream = respond(
                    self.agent,
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
            finally:
                await sentences.put(None)

        source = self._spawn(text_source(), f"llm{reply.turn_id}")
        try:
            while (sentence := await sentences.get()) is not None:
                pcm = await self._tts.synthesize(sentence)
                if "tts_first_audio" not in reply.timings:
                    reply.timings["tts_first_audio"] = time.perf_counter()
                n = self.outbound.enqueue(reply.turn_id, resampler.process(pcm))
                if not n:
                    continue
                self._observe("reply_text", reply.turn_id, sentence, reply.enqueued)
                reply.spans.append(_Span(reply.enqueued, reply.enqueued + n, sentence))
                reply.enqueued += n
            await source  # surfaces LLM errors
        except asyncio.CancelledError:
            source.cancel()
            raise
        except Exception:
            log.exception("call %s: reply %d failed; the call goes on", self.call_id, reply.turn_id)
            source.cancel()
        reply.text_done = True
        if self.outbound.finish_turn(reply.turn_id):
            self._turn_played(reply.turn_id)

    def _on_turn_audible(self, turn_id: int) -> None:
        reply = self._replies.get(turn_id)
        if reply is not None and "first_audio" not in reply.timings:
            reply.timings["first_audio"] = time.perf_counter()
            self._record_latency(reply)
        if self.engine is not None:
            self.engine.reply_audio_started(turn_id)
        self._fire("on_agent_started_speaking")

    def _record_latency(self, reply: _Reply) -> None:
        t = reply.timings
        if reply.greeting or "speech_end" not in t:
            return
        row = {
            "total": t["first_audio"] - t["speech_end"],
            "endpointing": t["start"] - t["speech_end"] - t.get("stt", 0.0),
            "stt": t.get("stt", 0.0),
            "llm_first_token": t.get("llm_first_token", t["start"]) - t["start"],
            "tts_first_audio": t.get("tts_first_audio", t["first_audio"]) - t.get("llm_first_token", t["start"]),
        }
        self.metrics.turns.append(row)
        log.info(
            "call %s: turn %d latency %.0f ms (endpointing %.0f, STT %.0f, LLM first token %.0f, TTS %.0f)",
            self.call_id, reply.turn_id, *(1000 * row[k] for k in ("total", "endpointing", "stt", "llm_first_token", "tts_first_audio")),
        )

    def _turn_played(self, turn_id: int) -> None:
        """Every sample of the reply has played at the caller's end."""
        reply = self._replies.pop(turn_id, None)
        if reply is None:
            return
        text = " ".join(s.text for s in reply.spans[reply.said_from :]).strip()
        if text:
            message = {"role": "assistant", "content": text}
            self.history.append(message)
            self._fire("on_agent_message_added", {"message": message})
            self._fire("on_agent_stopped_speaking")
        self._observe("reply_done", turn_id, " ".join(s.text for s in reply.spans).strip())
        self.outbound.forget_turn(turn_id)
        if self._reply is reply:
            self._reply = None
        if self.engine is not None:
            self._run_actions(self.engine.agent_finished(turn_id, self._now))

    def _drop_reply(self, turn_id: int) -> None:
        """The caller kept talking before hearing any of this reply: forget it entirely."""
        reply = self._replies.pop(turn_id, None)
        if reply is None:
            return
        if reply.task:
            reply.task.cancel()
        self.outbound.drop_turn(turn_id)
        if reply.user_index is not None and reply.user_index < len(self.history):
            # the user's words are merged into the next turn by the engine
            if self.history[reply.user_index].get("content") == reply.user_text:
                del self.history[reply.user_index:]
        if self._reply is reply:
            self._reply = None

    async def _interrupt(self, turn_id: int) -> None:
        reply = self._replies.pop(turn_id, None)
        if reply is None:
            return
        if reply.task:
            reply.task.cancel()
        await self.outbound.clear()
        if self._reply is reply:
            self._reply = None
        message = self._commit_cut_off(reply)
        self._observe("reply_interrupted", turn_id, message["content"])
        self._fire("on_agent_interrupted", {"message": message})
        self._fire("on_agent_stopped_speaking")

    def _commit_cut_off(self, reply: _Reply) -> dict[str, str]:
        """Keep in the history only what the caller heard, marked as cut off."""
        heard = heard_text(reply.spans, self.outbound.heard(reply.turn_id))
        already = " ".join(s.text for s in reply.spans[: reply.said_from])
        if already and heard.startswith(already):
            heard = heard[len(already) :].strip()
        message = {"role": "assistant", "content": (heard + CUT_OFF_MARK) if heard else CUT_OFF_MARK}
        self.history.append(message)
        return message
