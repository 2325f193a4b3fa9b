"""Deepgram Aura text-to-speech (``TTS.Deepgram``): one ``/v1/speak`` socket per call, reused by every reply.

Each sentence is ``Speak`` + ``Flush``; its audio is the binary frames until the ``Flushed`` answer. A barge-in
sends ``Clear`` (answered ``Cleared``): the provider stops generating. A sentence whose consumer walked away
(or was cancelled) is cleared before the next one starts, so no stale audio leaks into it. Only the part before
the first audio byte is retried (reconnecting: a timed-out socket is replaced). Phone calls ask for
``encoding=mulaw&sample_rate=8000``. ``synthesize()`` is one ``POST /v1/speak`` (whole sentences; also the path
for compressed encodings such as mp3, decoded with PyAV).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from telebridge.providers.checks import CheckCache
from telebridge.providers.context import PHONE_RATE
from telebridge.providers.deepgram_protocol import (
    DEFAULT_ORIGIN, PROVIDER, RAW_TTS_ENCODINGS, SPEAK_PATH, control, parse_speak, speak_params, speak_url,
)
from telebridge.providers.errors import ProviderError
from telebridge.providers.retry import RetryPolicy, with_retries
from telebridge.providers.sockets import close_socket
from telebridge.providers.deepgram_client import check_credentials, health_kind, http_request, ws_connect
from telebridge.providers.tts.base import OneShotSession
from telebridge.providers.tts.decoding import RawDecoder, decode_compressed

__all__ = ["DeepgramTTS", "DeepgramSession", "create"]

log = logging.getLogger("telebridge.providers.deepgram")
HEALTH = "tts.deepgram"
FLUSH_LIMIT, FLUSH_WINDOW = 20, 60.0  # documented: at most 20 Flush messages per 60 s on one socket
_DONE = object()
_CANCELLED = object()
_CLOSED = object()


def _decoder(encoding: str) -> RawDecoder:
    """Raw frames → int16 (a linear16 frame may split a sample: the odd byte waits for the next frame)."""
    return RawDecoder(encoding if encoding in ("mulaw", "alaw") else "pcm")


class DeepgramTTS:
    connect_timeout = 5.0
    request_timeout = 30.0
    first_byte_timeout = 5.0
    chunk_timeout = 10.0
    settle_timeout = 2.0
    policy = RetryPolicy(attempts=3, base_delay=0.1, max_delay=1.0)

    def __init__(self, cfg: Any, ctx: Any) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.origin = ctx.origin(PROVIDER, cfg, DEFAULT_ORIGIN)
        if ctx.wants_phone_format(cfg):
            self.encoding, self.sample_rate = "mulaw", PHONE_RATE
        else:
            self.encoding, self.sample_rate = str(cfg.encoding), int(cfg.sample_rate)
        self._key = cfg.api_key.get_secret_value() if cfg.api_key is not None else None
        self._check = CheckCache()
        self._client: Any = None

    def __repr__(self) -> str:
        return f"DeepgramTTS(model={self.cfg.model!r}, origin={self.origin!r}, encoding={self.encoding!r})"

    @property
    def health(self) -> Any:
        return self.ctx.health

    async def check(self) -> None:
        await check_credentials(self, HEALTH)

    def speak_url(self) -> str:
        return speak_url(self.origin, self.cfg.model, self.encoding, self.sample_rate)

    async def synthesize(self, text: str) -> np.ndarray:
        if not text.strip():
            return np.zeros(0, dtype=np.int16)
        import httpx

        params = speak_params(self.cfg.model, self.encoding, self.sample_rate, rest=True)
        timeout = httpx.Timeout(self.request_timeout, connect=self.connect_timeout, read=self.first_byte_timeout)

        async def attempt() -> Any:
            return await http_request(self, "POST", SPEAK_PATH, params=params, json={"text": text}, timeout=timeout)

        try:
            response = await with_retries(attempt, provider=PROVIDER, policy=self.policy)
            if self.encoding in RAW_TTS_ENCODINGS:
                pcm = _decoder(self.encoding).feed(response.content)
            else:
                pcm = await asyncio.to_thread(decode_compressed, response.content, self.sample_rate)
        except ProviderError as exc:
            self.health.error(HEALTH, health_kind(exc), str(exc))
            raise
        except Exception as exc:  # undecodable audio
            self.health.error(HEALTH, "protocol", type(exc).__name__)
            raise ProviderError(PROVIDER, f"undecodable {self.encoding} audio") from exc
        self.health.ok(HEALTH)
        return pcm

    async def open_session(self, *, call_id: str) -> Any:
        if self.encoding not in RAW_TTS_ENCODINGS:  # the socket streams raw encodings only
            return OneShotSession(self)
        session = DeepgramSession(self, call_id)
        try:
            await with_retries(session.connect, provider=PROVIDER, policy=self.policy)
        except ProviderError as exc:
            self.health.error(HEALTH, health_kind(exc), str(exc))
            raise
        return session


class DeepgramSession:
    """One call's ``/v1/speak`` socket. Sentences run one at a time (the socket's audio is not labelled)."""

    def __init__(self, engine: DeepgramTTS, call_id: str) -> None:
        self.engine = engine
        self.call_id = call_id
        self.sample_rate = engine.sample_rate
        self._ws: Any = None
        self._events: asyncio.Queue = asyncio.Queue()
        self._reader: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._active: object | None = None  # the stream() now consuming the socket
        self._reply: int | None = None
        self._pending_flush = False  # a Flush not yet answered: its sentence is still generating
        self._clear_sent = False
        self._flushes = 0  # Flush messages sent on this socket (Flushed carries the 0-based sequence_id)
        self._flush_times: deque[float] = deque()
        self._closed = False

    # --- connection -----------------------------------------------------------------------------------------
    async def connect(self) -> None:
        if self._closed:  # a sentence still under way when the call closed the session: no new socket
            raise ProviderError(PROVIDER, "session closed")
        ws = await ws_connect(self.engine, self.engine.speak_url())
        if self._closed:  # closed while we were connecting: nobody would ever close this socket
            await close_socket(ws)
            raise ProviderError(PROVIDER, "session closed")
        self._ws, self._events = ws, asyncio.Queue()
        self._pending_flush = self._clear_sent = False
        self._flushes = 0
        self._reader = asyncio.get_running_loop().create_task(self._read(ws, self._events),
                                                              name=f"{self.call_id}:deepgram-tts-recv")

    @staticmethod
    async def _read(ws: Any, events: asyncio.Queue) -> None:
        try:
            async for message in ws:
                events.put_nowait(message)
        except Exception:
            pass
        finally:
            events.put_nowait(_CLOSED)

    async def _drop(self) -> None:
        ws, reader, self._ws, self._reader = self._ws, self._reader, None, None
        try:
            if reader is not None:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        finally:  # even when cancelled: nobody else holds this socket now
            if ws is not None:
                await close_socket(ws)

    async def _send(self, kind: str, **fields: Any) -> None:
        try:
            await self._ws.send(control(kind, **fields))
        except Exception as exc:
            await self._drop()
            raise ProviderError(PROVIDER, f"socket closed while sending {kind}", retryable=True) from exc

    # --- events ---------------------------------------------------------------------------------------------
    async def _next(self, token: object, timeout: float, what: str) -> Any:
        """The next audio frame of the active sentence, or _DONE (Flushed) / _CANCELLED (Cleared, or a newer
        sentence took over)."""
        while True:
            if self._active is not token:
                return _CANCELLED
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns a message that was ready at the
                # moment the reply was cancelled, and the cancellation is lost (pipeline/call_tasks.py).
                async with asyncio.timeout(timeout):
                    message = await self._events.get()
            except TimeoutError:
                await self._drop()
                raise ProviderError(PROVIDER, f"{what} timed out after {timeout:.1f} s", retryable=True) from None
            if message is _CLOSED:
                code = getattr(self._ws, "close_code", None)
                await self._drop()
                raise ProviderError(PROVIDER, f"socket closed mid-sentence ({code})", retryable=True)
            if isinstance(message, bytes):
                if message:
                    return message
                continue
            outcome = await self._event(message)
            if outcome is not None:
                return outcome

    async def _event(self, message: str) -> Any:
        try:
            event = parse_speak(message)
        except (ValueError, TypeError) as exc:
            await self._drop()
            raise ProviderError(PROVIDER, "malformed frame on /v1/speak") from exc
        if event.type == "Flushed":
            if event.sequence_id is not None and event.sequence_id < self._flushes - 1:
                return None  # answer to a sentence that was cleared
            self._pending_flush = False
            return _DONE
        if event.type == "Cleared":
            self._pending_flush = self._clear_sent = False
            return _CANCELLED
        if event.type == "Warning":
            log.warning("call %s: deepgram warning: %s", self.call_id, event.message)
        elif event.type == "Error":
            await self._drop()
            raise ProviderError(PROVIDER, f"error: {event.message or 'unknown'}")
        return None

    async def _settle(self, token: object) -> None:
        """Connected, with no earlier sentence still generating (Clear it and wait for Cleared)."""
        if self._ws is None:
            await self.connect()
            return
        if not self._pending_flush:
            return
        if not self._clear_sent:
            await self._send("Clear")
            self._clear_sent = True
        try:
            while self._clear_sent:
                async with asyncio.timeout(self.engine.settle_timeout):
                    message = await self._events.get()
                if message is _CLOSED:
                    break
                if isinstance(message, str):
                    await self._event(message)
        except (TimeoutError, ProviderError):
            pass
        if self._clear_sent or self._ws is None:  # no Cleared: start over on a fresh socket
            await self._drop()
            await self.connect()

    async def _begin(self, text: str, token: object) -> Any:
        async with self._lock:
            if self._active is not token or self._closed:
                return _CANCELLED
            try:
                await self._settle(token)
            except ProviderError:
                if self._closed:  # the call ended meanwhile: this sentence is moot, not a provider failure
                    return _CANCELLED
                raise
            await self._send("Speak", text=text)
            await self._send("Flush")
            self._flush_times.append(time.monotonic())
            self._flushes += 1
            self._pending_flush = True
        return await self._next(token, self.engine.first_byte_timeout, "first audio")

    # --- TTSSession ------------------------------------------------------------------------------------------
    async def stream(self, text: str, *, reply_id: int) -> AsyncIterator[np.ndarray]:
        if not text.strip():
            return
        if self._closed:
            raise ProviderError(PROVIDER, "session closed")
        if self._flush_budget_spent():  # Deepgram refuses a 21st Flush within 60 s: whole sentence over REST
            pcm = await self.engine.synthesize(text)
            if len(pcm):
                yield pcm
            return
        token = object()
        self._active, self._reply = token, reply_id
        decode = _decoder(self.engine.encoding)
        try:
            item = await with_retries(lambda: self._begin(text, token), provider=PROVIDER, policy=self.engine.policy)
            while item is not _DONE and item is not _CANCELLED:
                pcm = decode.feed(item)
                if len(pcm):
                    yield pcm
                item = await self._next(token, self.engine.chunk_timeout, "audio")
            if item is _DONE:
                self.engine.health.ok(HEALTH)
        except ProviderError as exc:
            self.engine.health.error(HEALTH, health_kind(exc), str(exc))
            raise
        finally:
            if self._active is token:
                self._active = None

    def _flush_budget_spent(self) -> bool:
        now = time.monotonic()
        while self._flush_times and now - self._flush_times[0] > FLUSH_WINDOW:
            self._flush_times.popleft()
        return len(self._flush_times) >= FLUSH_LIMIT

    async def cancel(self, reply_id: int) -> None:
        if self._ws is None or self._reply != reply_id or not self._pending_flush or self._clear_sent:
            return
        self._clear_sent = True
        with contextlib.suppress(ProviderError):
            await self._send("Clear")

    async def end_reply(self, reply_id: int) -> None:
        return None  # one Flush per sentence already ends each sentence; the socket has no reply contexts

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._active = None
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.send(control("Close")), 1.0)
        await self._drop()


def create(cfg: Any, ctx: Any) -> DeepgramTTS:
    return DeepgramTTS(cfg, ctx)
