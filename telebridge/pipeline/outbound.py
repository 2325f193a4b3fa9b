"""Agent audio to the caller: paced at real time with a small lead, every chunk followed by a named mark.

Why pace at all: Twilio buffers whatever we send. Sending a whole reply at once makes ``clear`` the only way to
stop it and makes the playback position unknowable. We keep Twilio's buffer at about ``lead`` seconds, so a
barge-in stops the agent quickly and each echoed mark says what the caller heard.

:class:`Pacer` is the sans-I/O part (when may the next chunk go?); :class:`OutboundAudio` is the thin asyncio
shell that owns the send loop for one call.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..audio.g711 import ulaw_encode
from ..twilio.stream import encode_clear, encode_mark, encode_media
from .ledger import Echo, MarkLedger

log = logging.getLogger("telebridge.outbound")

SAMPLE_RATE = 8000


TIMER_RESOLUTION = 0.001
"""Seconds: the event loop's timer granularity. uvloop keeps ``loop.time()`` in whole milliseconds and runs a
``sleep`` of under half a millisecond as ``call_soon``, so waiting for a fraction of a millisecond is a busy loop
until the clock ticks (measured: ~200 extra wake-ups per call-second of agent audio). A wait shorter than this is
no wait: the chunk goes up to a millisecond early, against a lead of a hundred."""


class Pacer:
    """Tracks when Twilio will have played everything sent so far (an estimate on our clock)."""

    def __init__(self, lead: float) -> None:
        self.lead = lead
        self.play_end = 0.0

    def wait_time(self, now: float) -> float:
        """Seconds to wait before the next chunk may be sent: 0, or at least :data:`TIMER_RESOLUTION`."""
        wait = self.play_end - now - self.lead
        return wait if wait >= TIMER_RESOLUTION else 0.0

    def sent(self, now: float, seconds: float) -> None:
        self.play_end = max(self.play_end, now) + seconds

    def reset(self, now: float) -> None:
        self.play_end = now


@dataclass(slots=True)
class _Segment:
    turn_id: int
    audio: bytes  # μ-law 8 kHz
    pos: int = 0


class OutboundAudio:
    """Twilio's :class:`~.sink.AudioSink`: a per-call sender task. ``enqueue`` never blocks; ``clear`` is immediate."""

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        stream_sid: str,
        send: Callable[[str], Awaitable[None]],
        *,
        chunk_ms: int = 80,
        lead_ms: int = 120,
        on_turn_audible: Callable[[int], None] | None = None,
        on_turn_played: Callable[[int], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.stream_sid = stream_sid
        self._send = send
        self.chunk_bytes = SAMPLE_RATE * chunk_ms // 1000
        self.pacer = Pacer(lead_ms / 1000)
        self.ledger = MarkLedger()
        self._queue: collections.deque[_Segment] = collections.deque()
        self._wake = asyncio.Event()
        self.on_turn_audible = on_turn_audible
        self.on_turn_played = on_turn_played
        self._audible: set[int] = set()
        self._closing: set[int] = set()  # turns whose last audio has been enqueued
        self._clock = clock or asyncio.get_running_loop().time
        self._task: asyncio.Task | None = None
        self.closed = False
        self.sent_messages = 0
        self._heard_waiters: dict[int, Callable[[float], None]] = {}
        self.tap: Any = None  # the console's listen-in: ``agent(ulaw)`` per chunk sent, ``clear()``

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"outbound:{self.stream_sid}")

    def enqueue(self, turn_id: int, audio: np.ndarray) -> int:
        """Queue float32 (or int16) audio at 8 kHz for the turn; returns the samples queued."""
        ulaw = ulaw_encode(audio)
        if ulaw and not self.closed:
            self._queue.append(_Segment(turn_id, ulaw))
            self._wake.set()
        return len(ulaw)

    def heard(self, turn_id: int) -> int:
        return self.ledger.heard(turn_id)

    def finish_turn(self, turn_id: int) -> bool:
        """No more audio will be enqueued for ``turn_id``. True if it has already played out entirely."""
        if any(s.turn_id == turn_id for s in self._queue):
            self._closing.add(turn_id)
            return False
        return self.ledger.close_turn(turn_id)

    def forget_turn(self, turn_id: int) -> None:
        self.ledger.forget(turn_id)
        self._heard_waiters.pop(turn_id, None)

    def when_heard(self, turn_id: int, callback: Callable[[float], None]) -> None:
        """Call ``callback(t)`` once the first mark of ``turn_id`` echoes as played, ``t`` being the
        ``time.perf_counter()`` instant its playback began (the echo's time less the audio it says was played).
        Never called if the turn is flushed or forgotten before any of it is heard."""
        self._heard_waiters[turn_id] = callback

    def mark_echoed(self, name: str) -> None:
        """Twilio echoed one of our marks: playback reached it (or it was flushed by our ``clear``)."""
        result = self.ledger.echoed(name)
        if self._heard_waiters and result.outcome is Echo.PLAYED:
            waiter = self._heard_waiters.pop(result.turn_id, None)  # type: ignore[arg-type]
            if waiter is not None:
                waiter(time.perf_counter() - result.heard_offset / SAMPLE_RATE)
        if result.turn_finished and result.turn_id is not None and self.on_turn_played:
            self.on_turn_played(result.turn_id)

    def queued_samples(self, turn_id: int | None = None) -> int:
        return sum(len(s.audio) - s.pos for s in self._queue if turn_id is None or s.turn_id == turn_id)

    async def clear(self) -> None:
        """Drop everything unsent and flush Twilio's buffer (its pending marks come back as flushed)."""
        self._queue.clear()
        self._closing.clear()
        self.pacer.reset(self._clock())
        self.ledger.clear()
        if self.tap is not None:
            self.tap.clear()
        if not self.closed:
            try:
                await self._send(encode_clear(self.stream_sid))
            except Exception as exc:  # the caller hung up as we stopped talking: the call is over, not an error
                log.debug("outbound %s: clear not sent: %r", self.stream_sid, exc)
                self.closed = True
                return
            self.sent_messages += 1

    def drop_turn(self, turn_id: int) -> None:
        """Forget unsent audio of one turn (without touching what Twilio already has)."""
        self._queue = collections.deque(s for s in self._queue if s.turn_id != turn_id)
        self._closing.discard(turn_id)

    async def _run(self) -> None:
        try:
            while not self.closed:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                delay = self.pacer.wait_time(self._clock())
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue
                seg = self._queue[0]
                chunk = seg.audio[seg.pos : seg.pos + self.chunk_bytes]
                seg.pos += len(chunk)
                name = self.ledger.sent(seg.turn_id, len(chunk))
                if seg.pos >= len(seg.audio):
                    self._queue.popleft()
                    if seg.turn_id in self._closing and not any(s.turn_id == seg.turn_id for s in self._queue):
                        self._closing.discard(seg.turn_id)
                        self.ledger.close_turn(seg.turn_id)
                self.pacer.sent(self._clock(), len(chunk) / SAMPLE_RATE)
                await self._send(encode_media(self.stream_sid, chunk))
                await self._send(encode_mark(self.stream_sid, name))
                if self.tap is not None:  # the console's listen-in (only while the call is recorded with consent)
                    self.tap.agent(chunk)
                self.sent_messages += 2
                if seg.turn_id not in self._audible:
                    self._audible.add(seg.turn_id)
                    if self.on_turn_audible:
                        self.on_turn_audible(seg.turn_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket went away under us: the call is over
            log.debug("outbound %s stopped: %r", self.stream_sid, exc)
            self.closed = True

    async def aclose(self) -> None:
        self.closed = True
        self._queue.clear()
        self._heard_waiters.clear()
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
