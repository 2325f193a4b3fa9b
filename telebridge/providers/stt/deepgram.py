"""Deepgram speech-to-text (``STT.Deepgram``): one live ``/v1/listen`` socket per call, plus ``POST /v1/listen``
for whole utterances (the fallback when the stream is gone).

The stream (:class:`DeepgramStream`) is fed every frame of caller audio. On a phone call the frames are the
caller's μ-law, sent as ``encoding=mulaw&sample_rate=8000``: the bytes as Twilio sent them when the call hands
them over (``feed(pcm, ulaw)``: re-encoding the decoded frame gives the same bytes, at a cost on every frame of
every call), else ``pcm`` re-encoded; otherwise linear16 at the config's ``sample_rate``. Audio goes out in
~100 ms messages through a bounded queue (a stuck socket drops the oldest audio and counts it). Word times are kept on the call clock, across reconnects: a dropped socket is
replaced (bounded, jittered retries) and the audio since the last final word is sent again. ``transcript()``
sends ``Finalize`` and waits (bounded) for the ``from_finalize`` result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from telebridge.audio.g711 import ulaw_encode
from telebridge.audio.pcm import to_int16
from telebridge.audio.resample import Resampler
from telebridge.audio.wav import wav_bytes
from telebridge.providers.checks import CheckCache
from telebridge.providers.context import PHONE_RATE
from telebridge.providers.deepgram_client import check_credentials, health_kind, http_request, ws_connect
from telebridge.providers.deepgram_protocol import (
    DEFAULT_ORIGIN, LISTEN_PATH, PROVIDER, ClockMap, WordLog, close_reason, control, join_words, listen_url,
    parse_listen, parse_prerecorded, prerecorded_params,
)
from telebridge.providers.errors import ProviderError
from telebridge.providers.retry import RetryPolicy, with_retries
from telebridge.providers.sockets import close_socket
from telebridge.providers.stt.base import STT_SAMPLE_RATE, Transcript

__all__ = ["DeepgramSTT", "DeepgramStream", "create"]

log = logging.getLogger("telebridge.providers.deepgram")
HEALTH = "stt.deepgram"


class DeepgramSTT:
    """Engine shared by every call using one ``STT.Deepgram`` configuration. Timings are attributes so a test
    (or an operator) can tighten them."""

    connect_timeout = 5.0
    request_timeout = 15.0
    batch_seconds = 0.1
    queue_seconds = 5.0  # audio the send queue holds before dropping the oldest
    replay_seconds = 5.0  # audio kept for re-sending after a reconnect
    keepalive_interval = 4.0  # KeepAlive after this long without sending (Deepgram closes at ~10 s)
    finalize_timeout = 1.5
    close_timeout = 2.0
    connect_policy = RetryPolicy(attempts=3, base_delay=0.1, max_delay=1.0)
    reconnect_policy = RetryPolicy(attempts=4, base_delay=0.2, max_delay=2.0)

    def __init__(self, cfg: Any, ctx: Any) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.origin = ctx.origin(PROVIDER, cfg, DEFAULT_ORIGIN)
        self.phone = ctx.wants_phone_format(cfg, "sample_rate")
        self.encoding, self.stream_rate = ("mulaw", PHONE_RATE) if self.phone else ("linear16", int(cfg.sample_rate))
        self._key = cfg.api_key.get_secret_value() if cfg.api_key is not None else None
        self._check = CheckCache()
        self._client: Any = None

    def __repr__(self) -> str:
        return f"DeepgramSTT(model={self.cfg.model!r}, origin={self.origin!r}, encoding={self.encoding!r})"

    @property
    def health(self) -> Any:
        return self.ctx.health

    async def check(self) -> None:
        await check_credentials(self, HEALTH)

    # --- pre-recorded ---------------------------------------------------------------------------------------
    async def transcribe(self, audio: np.ndarray, *, language: str | None = None) -> Transcript:
        params = prerecorded_params(self.cfg)
        if language:
            params = [(k, language if k == "language" else v) for k, v in params]
        body = wav_bytes(np.asarray(audio, dtype=np.float32), STT_SAMPLE_RATE)

        async def attempt() -> Any:
            return await http_request(self, "POST", LISTEN_PATH, params=params, content=body,
                                      headers={"Content-Type": "audio/wav"})

        try:
            response = await with_retries(attempt, provider=PROVIDER)
            text = parse_prerecorded(response.json())
        except ProviderError as exc:
            self.health.error(HEALTH, health_kind(exc), str(exc))
            raise
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self.health.error(HEALTH, "protocol", "unexpected /v1/listen response")
            raise ProviderError(PROVIDER, "unexpected /v1/listen response") from exc
        self.health.ok(HEALTH)
        return Transcript(text=text, language=language or self.cfg.language, duration=len(audio) / STT_SAMPLE_RATE)

    # --- live -----------------------------------------------------------------------------------------------
    async def open_stream(self, *, input_rate: int, call_id: str, start: float = 0.0) -> DeepgramStream:
        stream = DeepgramStream(self, input_rate=input_rate, call_id=call_id, start=start)
        await stream.start()
        return stream

    def listen_url(self) -> str:
        return listen_url(self.origin, self.cfg, encoding=self.encoding, sample_rate=self.stream_rate)


@dataclass
class _Item:
    kind: str  # "audio" or a control message type
    data: bytes = b""
    t0: float = 0.0  # call-clock start of the audio
    dur: float = 0.0
    waiter: asyncio.Future | None = None  # Finalize: resolved by the from_finalize result
    mark: float = 0.0  # Finalize: socket seconds of audio sent before it


class DeepgramStream:
    """One call's live transcription (see the module docstring)."""

    def __init__(self, engine: DeepgramSTT, *, input_rate: int, call_id: str, start: float = 0.0) -> None:
        self.engine = engine
        self.call_id = call_id
        self.failed = False
        self.dropped = 0  # audio messages dropped because the socket could not keep up
        self.reconnects = 0
        self.keepalives = 0
        self._mulaw = engine.encoding == "mulaw"
        self._rate = engine.stream_rate
        self._resampler = Resampler(input_rate, self._rate) if input_rate != self._rate else None
        self._delay = self._resampler.delay if self._resampler is not None else 0
        self.takes_ulaw = self._mulaw and self._resampler is None  # μ-law frames as received go out as they are
        self._bps = self._rate * (1 if self._mulaw else 2)
        self._batch = max(1, int(self._bps * engine.batch_seconds))
        self._max_items = max(2, int(engine.queue_seconds / engine.batch_seconds))
        # samples produced at the stream rate: the call clock, in stream samples (from ``start``: a stream opened
        # mid-call, as a fallback, keeps its words on the call's clock)
        self._out = round(start * self._rate)
        self._pending = bytearray()
        self._pending_t0 = 0.0
        self._queue: deque[_Item] = deque()
        self._history: deque[_Item] = deque()
        self._in_flight: deque[_Item] = deque()  # Finalize sent, result not yet received
        self._wake = asyncio.Event()
        self._log = WordLog()
        self._clock = ClockMap()
        self._socket_seconds = 0.0
        self._last_send = time.monotonic()
        self._closing = False
        self._connected = False
        self._task: asyncio.Task | None = None

    @property
    def health(self) -> Any:
        return self.engine.health

    # --- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            ws = await with_retries(lambda: ws_connect(self.engine, self.engine.listen_url()), provider=PROVIDER,
                                    policy=self.engine.connect_policy)
        except ProviderError as exc:
            self.health.error(HEALTH, health_kind(exc), str(exc))
            raise
        self.health.ok(HEALTH)
        self._task = asyncio.get_running_loop().create_task(self._supervise(ws), name=f"{self.call_id}:deepgram-stt")

    async def aclose(self) -> None:
        if self._closing:
            return
        self._closing = True
        task = self._task
        if task is None or task.done():
            self._fail_waiters()
            return
        if self._connected:
            self._push_pending()
            self._enqueue(_Item("CloseStream"))
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(task), self.engine.close_timeout)
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._fail_waiters()

    # --- hot path -------------------------------------------------------------------------------------------
    def feed(self, pcm: np.ndarray, ulaw: bytes | None = None) -> None:
        if self._closing or self.failed:
            return
        try:
            if ulaw is not None and self.takes_ulaw and len(ulaw) == len(pcm):
                data = ulaw
            else:
                x = np.asarray(pcm, dtype=np.float32)
                if self._resampler is not None:
                    x = self._resampler.process(x)
                if not len(x):
                    return
                data = ulaw_encode(x) if self._mulaw else to_int16(x).astype("<i2").tobytes()
            if not self._pending:
                self._pending_t0 = (self._out - self._delay) / self._rate
            self._out += len(data) if self._mulaw else len(data) // 2
            self._pending += data
            if len(self._pending) >= self._batch:
                self._push_pending()
        except Exception:  # the hot path never raises
            log.exception("call %s: deepgram feed failed", self.call_id)

    def _push_pending(self) -> None:
        if not self._pending:
            return
        data = bytes(self._pending)
        self._pending.clear()
        self._enqueue(_Item("audio", data, self._pending_t0, len(data) / self._bps))

    def _enqueue(self, item: _Item) -> None:
        self._queue.append(item)
        if item.kind == "audio" and len(self._queue) > self._max_items:
            for i, old in enumerate(self._queue):  # drop the oldest audio, never a control message
                if old.kind == "audio":
                    del self._queue[i]
                    self.dropped += 1
                    if self.dropped == 1 or self.dropped % 50 == 0:
                        log.warning("call %s: deepgram socket stuck; %d audio messages dropped", self.call_id,
                                    self.dropped)
                    break
        self._wake.set()

    # --- results --------------------------------------------------------------------------------------------
    def words(self, start: float, end: float | None = None) -> str:
        return join_words(self._log.words(start, end))

    async def transcript(self, start: float, end: float) -> Transcript:
        if self.failed:
            raise ProviderError(PROVIDER, "live transcription failed", retryable=False)
        self._push_pending()
        waiter = asyncio.get_running_loop().create_future()
        self._enqueue(_Item("Finalize", waiter=waiter))
        finalized = False
        try:
            async with asyncio.timeout(self.engine.finalize_timeout):  # not wait_for: it can lose a cancel on 3.11
                await asyncio.shield(waiter)
            finalized = True
        except TimeoutError:
            log.info("call %s: deepgram Finalize unanswered after %.1f s", self.call_id, self.engine.finalize_timeout)
            if not self._connected:  # the socket is down (reconnecting): what it heard of this turn is partial
                raise ProviderError(PROVIDER, "live transcription interrupted", retryable=True) from None
        except ProviderError:
            raise
        words = self._log.words(start, end, interim=not finalized, slack=0.3)
        return Transcript(text=join_words(words), language=self.engine.cfg.language, duration=max(0.0, end - start))

    # --- the socket -----------------------------------------------------------------------------------------
    async def _supervise(self, ws: Any) -> None:
        try:
            while True:
                reason = await self._run_socket(ws)
                if self._closing:
                    return
                kind, detail = reason
                self.health.error(HEALTH, kind, detail)
                log.warning("call %s: deepgram %s; reconnecting", self.call_id, detail)
                ws = await self._reconnect()
                if ws is None:
                    if not self._closing:
                        self._fail(detail)
                    return
        finally:
            self._connected = False

    async def _run_socket(self, ws: Any) -> tuple[str, str]:
        self._connected = True
        loop = asyncio.get_running_loop()
        sender = loop.create_task(self._send_loop(ws), name=f"{self.call_id}:deepgram-stt-send")
        receiver = loop.create_task(self._recv_loop(ws), name=f"{self.call_id}:deepgram-stt-recv")
        reason = ("disconnected", "socket closed")
        try:
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if isinstance(exc, _ProtocolFault):
                    reason = ("protocol", str(exc))
        finally:
            self._connected = False
            for task in (sender, receiver):
                task.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
            await close_socket(ws)
        if reason[0] != "protocol":
            reason = close_reason(getattr(ws, "close_code", None), getattr(ws, "close_reason", None))
        return reason

    async def _send_loop(self, ws: Any) -> None:
        interval = self.engine.keepalive_interval
        while True:
            if not self._queue:
                self._wake.clear()
                wait = max(0.05, interval - (time.monotonic() - self._last_send))
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    await ws.send(control("KeepAlive"))
                    self.keepalives += 1
                    self._last_send = time.monotonic()
                continue
            item = self._queue[0]
            if item.kind == "audio":
                self._clock.expect(self._socket_seconds, item.t0)
                await ws.send(item.data)
                self._socket_seconds += item.dur
                self._history.append(item)
                while self._history and self._history[0].t0 < item.t0 - self.engine.replay_seconds:
                    self._history.popleft()
            else:
                item.mark = self._socket_seconds
                if item.waiter is not None:
                    self._in_flight.append(item)  # before sending: the answer may come back at once
                try:
                    await ws.send(control(item.kind))
                except BaseException:
                    if item.waiter is not None and item in self._in_flight:
                        self._in_flight.remove(item)  # still queued: it is sent again on the next socket
                    raise
            self._queue.popleft()
            self._last_send = time.monotonic()

    async def _recv_loop(self, ws: Any) -> None:
        async for message in ws:
            if isinstance(message, bytes):
                raise _ProtocolFault("binary frame on /v1/listen")
            try:
                event = parse_listen(message)
            except (ValueError, KeyError, TypeError) as exc:
                raise _ProtocolFault("malformed frame on /v1/listen") from exc
            if event.type == "Results":
                self._log.apply(event, self._clock)
                if event.from_finalize:
                    self._finalized(event.start + event.duration)
            elif event.type == "Error":
                log.warning("call %s: deepgram error event: %s", self.call_id, (event.raw or {}).get("description"))

    def _finalized(self, socket_end: float) -> None:
        """A from_finalize result: every Finalize whose audio it covers is answered (at least the oldest)."""
        first = True
        while self._in_flight and (first or self._in_flight[0].mark <= socket_end + 0.05):
            item = self._in_flight.popleft()
            if item.waiter is not None and not item.waiter.done():
                item.waiter.set_result(True)
            first = False

    async def _reconnect(self) -> Any | None:
        policy = self.engine.reconnect_policy
        for attempt in range(policy.attempts):
            await asyncio.sleep(policy.delay(attempt) + 0.05 * attempt)
            if self._closing:
                return None
            try:
                ws = await ws_connect(self.engine, self.engine.listen_url())
            except ProviderError as exc:
                self.health.error(HEALTH, health_kind(exc), str(exc))
                if not exc.retryable:
                    return None
                continue
            self.reconnects += 1
            self.health.ok(HEALTH)
            self._prepare_replay()
            return ws
        return None

    def _prepare_replay(self) -> None:
        """A new socket: re-send the audio after the last final word (within ``replay_seconds``) and every
        Finalize the old socket left unanswered; the new socket's clock starts at the first re-sent chunk."""
        self._log.replayed_from()
        horizon = self._log.last_final_end()
        replay = [c for c in self._history if c.t0 + c.dur > horizon]
        self._history.clear()
        unanswered = list(self._in_flight)
        self._in_flight.clear()
        self._queue.extendleft(reversed(replay))
        self._queue.extend(unanswered)
        first_audio = next((i for i in self._queue if i.kind == "audio"), None)
        self._clock.reset(first_audio.t0 if first_audio is not None else (self._out - self._delay) / self._rate)
        self._socket_seconds = 0.0
        self._wake.set()

    def _fail(self, detail: str) -> None:
        self.failed = True
        log.error("call %s: deepgram live transcription gave up after %d reconnect attempts (%s)", self.call_id,
                  self.engine.reconnect_policy.attempts, detail)
        self._fail_waiters()

    def _fail_waiters(self) -> None:
        for item in (*self._in_flight, *self._queue):
            if item.waiter is not None and not item.waiter.done():
                item.waiter.set_exception(ProviderError(PROVIDER, "live transcription stopped", retryable=True))
                item.waiter.exception()  # mark retrieved: a waiter may have timed out already
        self._in_flight.clear()


class _ProtocolFault(Exception):
    pass


def create(cfg: Any, ctx: Any) -> DeepgramSTT:
    return DeepgramSTT(cfg, ctx)
