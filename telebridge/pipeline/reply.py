"""One reply of the agent: its data (text spans, audio kept whole, timings) and the making of its audio.

A reply streams the agent's LLM text (or a fixed text: greeting, check-in, goodbye) through a sentence chunker
into TTS; its audio is kept whole (at the sink's rate, :class:`_AudioStore`) so a pause can resume from any
sample, and each sentence is a :class:`_Span` of it. Offsets are *reply offsets*: samples at the sink's rate
from the start of the reply, whatever segments the sink carried it in (see :mod:`.speaking`).

:class:`ReplyProducer` turns a reply's text into that audio, one sentence at a time; what happens to the audio
(sent, kept while paused) is the caller's business (its ``feed`` callback).
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

from ..audio.resample import Resampler
from .keypad import Tones, current_reply
from .llm import respond
from .sentences import SentenceChunker

if TYPE_CHECKING:
    from ..session import SessionConfig
    from .speech import CallSpeech

log = logging.getLogger("telebridge.call")

CUT_OFF_MARK = "…"
# Agent audio longer than this arrives as one chunk (a whole sentence): it is resampled in a worker thread, since
# doing it on the event loop stalls every call's frames for tens of milliseconds under load.
THREAD_RESAMPLE_SECONDS = 0.5


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
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # its tools may run (see turns.Settle)

    @property
    def greeting(self) -> bool:
        return self.kind != "user"


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


class ReplyProducer:
    """One call's reply audio: LLM text (or fixed text) → sentences → TTS → the sink's rate → ``feed``.

    Collaborators: the call's ``speech`` (TTS), its LLM view ``agent``, the conversation (``history()`` and
    ``session_data()``, read when a reply starts its LLM loop), ``spawn`` (a task owned by the call), ``fire`` (the
    agent's event handlers), ``observe`` (the conversation observer), ``feed`` (new reply audio) and
    ``play_tones`` (keypad tones queued in the reply by ``send_dtmf``)."""

    def __init__(
        self,
        *,
        call_id: str,
        config: SessionConfig,
        speech: CallSpeech,
        agent: _CallAgent,
        sink_rate: int,
        history: Callable[[], list[dict[str, Any]]],
        session_data: Callable[[], dict[str, Any]],
        spawn: Callable[[Awaitable[Any], str], asyncio.Task],
        fire: Callable[[str, dict], None],
        observe: Callable[..., None],
        feed: Callable[[_Reply, np.ndarray], None],
        play_tones: Callable[[_Reply, Tones], None],
    ) -> None:
        self.call_id = call_id
        self.config = config
        self.speech = speech
        self.agent = agent
        self.sink_rate = sink_rate
        self._history = history
        self._session_data = session_data
        self._spawn = spawn
        self._fire = fire
        self._observe = observe
        self._feed = feed
        self._play_tones = play_tones

    async def produce(self, reply: _Reply) -> None:
        """Make the reply's audio, one sentence at a time; ``reply.text_done`` once all of it is made (or the
        reply failed: logged, the call goes on). Cancellation propagates."""
        speech = self.speech
        rate = speech.sample_rate
        resampler = Resampler(rate, self.sink_rate)
        sentences: asyncio.Queue[str | Tones | None] = asyncio.Queue(maxsize=8)
        reply.sentences = sentences
        agent_view = self.agent

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
                self._history(),
                self._session_data(),
                call_id=self.call_id,
                max_nested_function_calls=self.config.max_nested_function_calls,
                on_event=on_event,
                before_tools=reply.settled.wait,
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
                        rate, resampler = chunk_rate, Resampler(chunk_rate, self.sink_rate)
                    # A whole sentence at once (Piper, Google) goes to a thread, unless it came at the call's rate
                    # already (a cached phrase, see OneShotSession): the resampler only copies it then.
                    if resampler.ratio != (1, 1) and len(chunk) > rate * THREAD_RESAMPLE_SECONDS:
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
