"""The realtime API's :class:`~telebridge.pipeline.sink.AudioSink`: agent audio as ``response.audio.delta`` events.

Audio is released about ``lead`` seconds ahead of real time (0.3 s by default, like Unmute): the client's
buffer stays small, so when the user barges in the agent stops within that lead, and what the user has heard is
known from our own pacing clock — there are no marks to echo as on a phone line. ``heard(turn)`` is the part of
the turn whose (estimated) playback time has passed.

Text is aligned with the audio: each sentence's words are spread over the sentence's samples by character
share, and each word goes out as a ``response.text.delta`` together with the audio chunk it starts in.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..audio.resample import Resampler
from ..pipeline.outbound import TIMER_RESOLUTION, Pacer
from .audio_formats import OpusEncoder, encode_plain
from .protocol import FORMAT_RATES, AudioDelta, AudioDone, ServerEvent, TextDelta

log = logging.getLogger("telebridge.realtime.sink")


@dataclass(slots=True)
class _Chunk:
    play_start: float  # on our clock, when the client starts playing it
    offset: int  # first sample of the chunk within its segment
    samples: int


@dataclass(slots=True)
class _Segment:
    """One sink turn id. A reply is one segment, or several when it was paused and resumed."""

    reply_id: int
    base: int  # where the segment starts within its reply (samples)
    enqueued: int = 0
    sent: int = 0
    chunks: list[_Chunk] = field(default_factory=list)
    audible: bool = False
    closing: bool = False  # finish_turn was called: no more audio for this segment
    play_end: float = 0.0
    frozen_heard: int | None = None  # set by clear(): the client dropped the rest


@dataclass(slots=True)
class _ReplyText:
    """A reply's words, placed at sample positions within the reply, released as their audio goes out."""

    words: list[tuple[int, str]] = field(default_factory=list)
    released: int = 0
    pending: list[tuple[int, list[str]]] = field(default_factory=list)  # sentences still waiting for audio
    enqueued_end: int = 0  # reply position just after the last audio enqueued
    audio_done: bool = False


@dataclass(slots=True)
class _Queued:
    segment: int
    audio: np.ndarray  # float32 at the sink's rate
    pos: int = 0


class AudioEncoder:
    """Float audio at the sink's rate → the bytes of the session's ``output_audio_format`` (switchable)."""

    def __init__(self, sample_rate: int, fmt: str) -> None:
        self.sample_rate = sample_rate
        self.format = fmt
        self._resampler: Resampler | None = None
        self._opus: OpusEncoder | None = None
        self.set_format(fmt)

    def set_format(self, fmt: str) -> None:
        self.format = fmt
        rate = FORMAT_RATES[fmt]
        self._resampler = Resampler(self.sample_rate, rate) if rate != self.sample_rate else None
        if fmt == "opus" and self._opus is None:
            self._opus = OpusEncoder()  # one Ogg stream for the whole session, kept across format switches

    def encode(self, audio: np.ndarray) -> bytes:
        if self._resampler is not None:
            audio = self._resampler.process(audio)
        if self.format == "opus":
            assert self._opus is not None
            return self._opus.encode(audio)
        return encode_plain(audio, self.format)

    def flush(self) -> bytes:
        """The end of a reply: what an encoder still holds (Opus: the last partial frame, padded)."""
        return self._opus.flush() if self.format == "opus" and self._opus is not None else b""

    def drop(self) -> None:
        """The client cleared its playback buffer: forget held samples."""
        if self._opus is not None:
            self._opus.drop()


class RealtimeSink:
    """Paced ``response.audio.delta`` events for one session; see the module docstring.

    Besides the :class:`~telebridge.pipeline.sink.AudioSink` operations (keyed by the loop's sink turn ids,
    "segments") it takes the reply's text from the observer: :meth:`begin_reply`, :meth:`add_text`,
    :meth:`resume_reply` and :meth:`end_reply`, keyed by reply turn id with sample positions within the reply.
    A sentence's words are placed once its audio is enqueued, whichever of the two the loop reports first.
    """

    def __init__(
        self,
        emit: Callable[[ServerEvent], None],
        *,
        output_format: str = "pcm16",
        chunk_ms: int = 40,
        lead_ms: int = 300,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._emit = emit
        self.sample_rate = FORMAT_RATES[output_format]
        self.encoder = AudioEncoder(self.sample_rate, output_format)
        self.chunk_samples = self.sample_rate * chunk_ms // 1000
        self.pacer = Pacer(lead_ms / 1000)
        self.on_turn_audible: Callable[[int], None] | None = None
        self.on_turn_played: Callable[[int], None] | None = None
        self._clock = clock or asyncio.get_running_loop().time
        self._queue: collections.deque[_Queued] = collections.deque()
        self._segments: dict[int, _Segment] = {}
        self._replies: dict[int, _ReplyText] = {}
        self._resuming: tuple[int, int] | None = None  # (reply, base) for the next new segment
        self._played_at: dict[int, float] = {}  # segments fully sent, waiting for their last sample to play
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.closed = False
        self.events_sent = 0

    # --- AudioSink ------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="realtime-sink")

    def _segment(self, segment_id: int) -> _Segment:
        seg = self._segments.get(segment_id)
        if seg is None:
            if self._resuming is not None:
                reply_id, base = self._resuming
                self._resuming = None
            else:  # a reply's first segment carries the reply's own turn id
                reply_id, base = segment_id, 0
            seg = self._segments[segment_id] = _Segment(reply_id, base)
        return seg

    def _reply(self, reply_id: int) -> _ReplyText:
        reply = self._replies.get(reply_id)
        if reply is None:
            reply = self._replies[reply_id] = _ReplyText()
            while len(self._replies) > 8:  # replies dropped without a word from the loop
                del self._replies[next(iter(self._replies))]
        return reply

    def enqueue(self, turn_id: int, audio: np.ndarray) -> int:
        arr = np.asarray(audio)
        pcm = arr.astype(np.float32) / np.float32(32768.0) if arr.dtype == np.int16 else arr.astype(np.float32)
        if self.closed or not len(pcm):
            return 0
        seg = self._segment(turn_id)
        seg.enqueued += len(pcm)
        reply = self._reply(seg.reply_id)
        reply.enqueued_end = max(reply.enqueued_end, seg.base + seg.enqueued)
        self._place_words(reply)
        self._queue.append(_Queued(turn_id, pcm))
        self._wake.set()
        return len(pcm)

    def finish_turn(self, turn_id: int) -> bool:
        seg = self._segments.get(turn_id)
        if seg is None or seg.enqueued == 0:
            reply = self._replies.get(seg.reply_id if seg is not None else turn_id)
            if reply is not None:
                self._release_words(reply, everything=True)
                self._audio_done(reply)
            return True
        seg.closing = True
        if any(q.segment == turn_id for q in self._queue):
            return False
        self._all_sent(turn_id, seg)
        if self._clock() >= seg.play_end:
            self._played_at.pop(turn_id, None)
            return True
        return False

    def drop_turn(self, turn_id: int) -> None:
        self._queue = collections.deque(q for q in self._queue if q.segment != turn_id)
        self._played_at.pop(turn_id, None)

    async def clear(self) -> None:
        now = self._clock()
        for seg in self._segments.values():
            if seg.frozen_heard is None:
                seg.frozen_heard = self._heard_at(seg, now)
        self._queue.clear()
        self._played_at.clear()
        self.pacer.reset(now)
        self.encoder.drop()

    def forget_turn(self, turn_id: int) -> None:
        self._segments.pop(turn_id, None)
        self._played_at.pop(turn_id, None)

    def heard(self, turn_id: int) -> int:
        seg = self._segments.get(turn_id)
        if seg is None:
            return 0
        if seg.frozen_heard is not None:
            return seg.frozen_heard
        return self._heard_at(seg, self._clock())

    async def aclose(self) -> None:
        self.closed = True
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # --- reply text (from the observer) ---------------------------------------------------------------------
    def begin_reply(self, reply_id: int) -> None:
        self._reply(reply_id)

    def add_text(self, reply_id: int, start_sample: int, text: str) -> None:
        """A sentence of the reply whose audio starts at ``start_sample`` of the reply."""
        words = text.split()
        if words:
            reply = self._reply(reply_id)
            reply.pending.append((start_sample, words))
            self._place_words(reply)

    def resume_reply(self, reply_id: int, from_sample: int) -> None:
        """The reply plays on from ``from_sample``: the next new segment is its continuation."""
        self._resuming = (reply_id, from_sample)

    def end_reply(self, reply_id: int) -> None:
        """The reply is over (played, or cut off): no more of its words; its audio is done."""
        reply = self._replies.pop(reply_id, None)
        if reply is not None:
            self._audio_done(reply)

    # --- format ---------------------------------------------------------------------------------------------
    def set_output_format(self, fmt: str) -> None:
        """Switch the encoding of the audio still to be sent (the sink's own rate does not change)."""
        if fmt != self.encoder.format:
            self.encoder.set_format(fmt)

    # --- internals ------------------------------------------------------------------------------------------
    def _heard_at(self, seg: _Segment, now: float) -> int:
        heard = 0
        for chunk in seg.chunks:
            if now <= chunk.play_start:
                break
            heard = chunk.offset + min(chunk.samples, int((now - chunk.play_start) * self.sample_rate))
        return heard

    def _send(self, event: ServerEvent) -> None:
        self.events_sent += 1
        self._emit(event)

    @staticmethod
    def _place_words(reply: _ReplyText) -> None:
        """Spread each sentence whose audio has arrived over its samples, by character share."""
        while reply.pending and reply.pending[0][0] < reply.enqueued_end:
            start, words = reply.pending.pop(0)
            end = reply.enqueued_end
            total = sum(len(w) + 1 for w in words)
            pos = 0
            for word in words:
                reply.words.append((start + (end - start) * pos // total, word))
                pos += len(word) + 1

    def _release_words(self, reply: _ReplyText, upto: int | None = None, everything: bool = False) -> None:
        while reply.released < len(reply.words) and (everything or reply.words[reply.released][0] < (upto or 0)):
            word = reply.words[reply.released][1]
            self._send(TextDelta(delta=word if reply.released == 0 else " " + word))
            reply.released += 1

    def _audio_done(self, reply: _ReplyText) -> None:
        if not reply.audio_done:
            reply.audio_done = True
            self._send(AudioDone())

    def _all_sent(self, segment_id: int, seg: _Segment) -> None:
        """A finished segment's last chunk has gone out: the reply's words and audio are complete."""
        tail = self.encoder.flush()
        if tail:
            self._send(AudioDelta(delta=base64.b64encode(tail).decode("ascii")))
        reply = self._replies.get(seg.reply_id)
        if reply is not None:
            self._release_words(reply, everything=True)
            self._audio_done(reply)
        self._played_at[segment_id] = seg.play_end
        self._wake.set()

    def _check_played(self, now: float) -> float | None:
        """Report segments that finished playing; return when the next one will (None if none is pending)."""
        nxt: float | None = None
        for segment_id, at in list(self._played_at.items()):
            if at - now < TIMER_RESOLUTION:  # (a shorter wait would spin: see outbound.TIMER_RESOLUTION)
                del self._played_at[segment_id]
                if self.on_turn_played is not None:
                    self.on_turn_played(segment_id)
            else:
                nxt = at if nxt is None else min(nxt, at)
        return nxt

    async def _run(self) -> None:
        try:
            while not self.closed:
                now = self._clock()
                next_played = self._check_played(now)
                if not self._queue:
                    self._wake.clear()
                    timeout = None if next_played is None else max(0.0, next_played - now)
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    except asyncio.TimeoutError:
                        pass
                    continue
                delay = self.pacer.wait_time(now)
                if delay > 0:
                    if next_played is not None:
                        delay = min(delay, max(0.0, next_played - now))
                    await asyncio.sleep(delay)
                    continue
                self.send_chunk(now)
                await asyncio.sleep(0)  # let the receive side run between chunks
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("realtime sink stopped")
            self.closed = True

    def send_chunk(self, now: float) -> None:
        """Send the next chunk (the pacing decision is the caller's; tests drive this with their own clock)."""
        head = self._queue[0]
        piece = head.audio[head.pos : head.pos + self.chunk_samples]
        head.pos += len(piece)
        seg = self._segment(head.segment)
        play_start = max(self.pacer.play_end, now)
        self.pacer.sent(now, len(piece) / self.sample_rate)
        seg.chunks.append(_Chunk(play_start, seg.sent, len(piece)))
        seg.sent += len(piece)
        seg.play_end = self.pacer.play_end
        reply = self._replies.get(seg.reply_id)
        if reply is not None:
            self._release_words(reply, upto=seg.base + seg.sent)
        encoded = self.encoder.encode(piece)
        if encoded:  # Opus: samples short of a whole frame wait for the next chunk (or the reply's end)
            self._send(AudioDelta(delta=base64.b64encode(encoded).decode("ascii")))
        if not seg.audible:
            seg.audible = True
            if self.on_turn_audible is not None:
                self.on_turn_audible(head.segment)
        if head.pos >= len(head.audio):
            self._queue.popleft()
            if seg.closing and not any(q.segment == head.segment for q in self._queue):
                self._all_sent(head.segment, seg)
