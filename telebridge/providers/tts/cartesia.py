"""Cartesia (Sonic) text-to-speech over its WebSocket API, one socket per call.

Wire protocol (``Cartesia-Version: 2024-11-13``, the version whose voice object documents the
``__experimental_controls`` that Jay's ``speed``/``emotion`` fields are):

* ``wss://api.cartesia.ai/tts/websocket``; the key goes in the ``X-API-Key`` header (the docs also offer
  ``?api_key=``: never used, so the key stays out of every URL and log line).
* One ``context_id`` per reply. Each sentence is sent with ``continue: true`` (prosody flows across sentences),
  then an empty transcript with ``continue: true, flush: true``. The server answers ``chunk`` messages (base64
  audio), then ``flush_done`` carrying the flush id. ``end_reply`` sends ``{transcript: "", continue: false}``;
  ``cancel`` sends ``{"context_id": …, "cancel": true}``.
* Why flush and not word timestamps to end a sentence: ``flush_done`` is the server's own statement that every
  chunk of the text before it has been sent, so the sentence's iterator ends exactly there. Timestamps say when
  words are *spoken* within the audio, not whether more audio frames are still on the way, and would need a
  guessed grace period.
* Contexts expire about a second after their last audio: a sentence arriving later starts a fresh context, and a
  context the server reports gone (an ``error``/``done`` before any audio of the sentence) is replaced and the
  sentence resent once, transparently.

Phone calls ask for ``pcm_mulaw`` at 8 kHz (decoded here); otherwise ``pcm_s16le`` at the config's rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from telebridge.providers.checks import CheckCache
from telebridge.providers.context import ProviderContext, ws_origin
from telebridge.providers.errors import ProviderAuthError, ProviderError, error_kind, http_error, provider_error
from telebridge.providers.per_loop import PerLoop
from telebridge.providers.retry import with_retries
from telebridge.providers.sockets import CLOSE_TIMEOUT, close_socket
from telebridge.providers.tts.cartesia_protocol import API_VERSION, ENV_VAR, PROVIDER, CartesiaProtocol, Event

__all__ = ["CartesiaProtocol", "CartesiaTTS", "CartesiaSession", "create"]

log = logging.getLogger("telebridge.providers")
# The websockets library logs handshake headers (the key among them) at DEBUG: its logger for our sockets never
# goes below INFO, whatever the root level.
_WIRE_LOG = logging.getLogger("telebridge.providers.cartesia.wire")
_WIRE_LOG.setLevel(logging.INFO)

HEALTH = "tts.cartesia"
PUBLIC_ORIGIN = "https://api.cartesia.ai"
WS_PATH = "/tts/websocket"
QUEUE_LIMIT = 512


_err = functools.partial(provider_error, PROVIDER)


def _kind(exc: ProviderError) -> str:
    return error_kind(exc, default="protocol")


@dataclass
class _Link:
    """One socket, its reader task and the queues of the sentences streaming on it (by context id)."""

    ws: ClientConnection
    queues: dict[str, asyncio.Queue[Event]] = field(default_factory=dict)
    reader: asyncio.Task | None = None
    failure: ProviderError | None = None

    def forget(self, context_id: str, q: asyncio.Queue[Event]) -> None:
        """Unregister a sentence's queue; draining it frees a reader blocked on a full queue."""
        if self.queues.get(context_id) is q:
            del self.queues[context_id]
        while not q.empty():
            q.get_nowait()


@dataclass
class _Reply:
    link: _Link
    context_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    flushes: int = 0
    last_activity: float = field(default_factory=time.monotonic)
    dirty: bool = False  # a sentence was abandoned mid-way: its leftovers must not leak into the next one


class CartesiaSession:
    """One call's socket. ``stream`` calls are sequential within a call (one sentence at a time)."""

    def __init__(self, engine: CartesiaTTS, call_id: str) -> None:
        self.engine = engine
        self.protocol = engine.protocol
        self.sample_rate = engine.sample_rate
        self.call_id = call_id
        self._link: _Link | None = None
        self._replies: dict[int, _Reply] = {}
        self._connect_lock = asyncio.Lock()
        self._closed = False

    # --- socket ---------------------------------------------------------------------------------------------
    async def connect(self) -> _Link:
        async with self._connect_lock:
            link = self._link
            if link is not None and link.failure is None and link.ws.state is State.OPEN:
                return link
            if self._closed:
                raise _err("session closed", "disconnected")
            link = _Link(await self.engine.open_socket())
            if self._closed:  # closed while we were connecting: nobody would ever close this socket
                await close_socket(link.ws)
                raise _err("session closed", "disconnected")
            link.reader = asyncio.get_running_loop().create_task(self._read(link), name=f"{self.call_id}:cartesia")
            self._link = link
            return link

    async def _read(self, link: _Link) -> None:
        failure = _err("connection closed mid-stream", "disconnected", retryable=True)
        try:
            async for raw in link.ws:
                event = self.protocol.parse(raw)
                targets = [link.queues.get(event.context_id)] if event.context_id else list(link.queues.values())
                for q in targets:
                    if q is not None:
                        await q.put(event)
        except ProviderError as exc:
            failure = exc
            await close_socket(link.ws, code=1002)
        except ConnectionClosed:
            pass
        finally:
            link.failure = failure
            for q in list(link.queues.values()):
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(Event("closed", failure=failure))

    @staticmethod
    async def _send(link: _Link, message: str, *, quiet: bool = False) -> None:
        try:
            await link.ws.send(message)
        except ConnectionClosed:
            if not quiet:
                raise _err("connection closed", "disconnected", retryable=True) from None

    @staticmethod
    async def _next(link: _Link, context_id: str, q: asyncio.Queue[Event], timeout: float) -> Event:
        if q.empty():
            if link.queues.get(context_id) is not q:
                return Event("cancelled")
            if link.failure is not None:
                raise link.failure
        try:
            async with asyncio.timeout(timeout):  # not wait_for: it can lose a cancel on 3.11 (pipeline/call_tasks.py)
                return await q.get()
        except TimeoutError:
            raise _err(f"no audio within {timeout:g} s", "timeout", retryable=True) from None

    @staticmethod
    def _classify(event: Event) -> str:
        # Flush ids are not compared: a context carries one sentence at a time (the next is sent only after
        # this one's flush_done) and an abandoned sentence retires its context, so every chunk on the context
        # belongs to the sentence being streamed and the first flush_done ends it.
        if event.kind == "chunk":
            return "audio"
        if event.kind in ("flush_done", "done", "cancelled"):
            return "end"
        if event.kind == "closed":
            raise event.failure or _err("connection closed", "disconnected", retryable=True)
        return "error" if event.kind == "error" else "skip"

    # --- replies --------------------------------------------------------------------------------------------
    async def _reply(self, reply_id: int, link: _Link) -> _Reply:
        """The reply's context: a fresh one after an abandoned sentence, an idle gap or a reconnect."""
        rep = self._replies.get(reply_id)
        if rep is None:
            rep = self._replies[reply_id] = _Reply(link)
            for old in sorted(self._replies)[:-8]:  # replies never ended nor cancelled do not pile up
                self._replies.pop(old, None)
        elif rep.dirty or rep.link is not link or (
                rep.flushes and time.monotonic() - rep.last_activity > self.engine.context_idle):
            if rep.dirty and rep.link is link:  # stop what the abandoned sentence left generating
                await self._send(link, self.protocol.cancel(rep.context_id), quiet=True)
            self._replies[reply_id] = rep = _Reply(link)
        return rep

    async def _start(self, text: str, reply_id: int) -> tuple[_Reply, asyncio.Queue[Event], Event]:
        """Send the sentence and wait for its first meaningful event (retried as a whole before any audio)."""
        link = await self.connect()
        rep = await self._reply(reply_id, link)
        transcript = text if text[-1:].isspace() else text + " "  # transcripts are concatenated verbatim
        for reopened in (False, True):
            q: asyncio.Queue[Event] = asyncio.Queue(QUEUE_LIMIT)
            ctx = rep.context_id
            link.queues[ctx] = q
            rep.flushes += 1
            try:
                await self._send(link, self.protocol.generation(ctx, transcript, cont=True))
                await self._send(link, self.protocol.generation(ctx, "", cont=True, flush=True))
                while (kind := self._classify(event := await self._next(
                        link, ctx, q, self.engine.first_byte_timeout))) == "skip":
                    pass
            except BaseException:
                rep.dirty = True
                link.forget(ctx, q)
                raise
            if kind in ("audio", "end") and event.kind != "done":
                return rep, q, event
            link.forget(ctx, q)
            if rep.flushes > 1 and not reopened:
                # The context expired between sentences (the server says so before any audio): a fresh one.
                log.info("call %s: cartesia context expired; continuing the reply on a new one", self.call_id)
                self._replies[reply_id] = rep = _Reply(link)
                continue
            rep.dirty = True
            raise self.protocol.error(event) if kind == "error" else _err("context ended before any audio",
                                                                          "protocol")
        raise AssertionError("unreachable")

    async def stream(self, text: str, *, reply_id: int) -> AsyncIterator[np.ndarray]:
        if not text.strip():
            return
        decoder, complete = self.protocol.decoder(), False
        try:
            rep, q, event = await with_retries(lambda: self._start(text, reply_id), provider=PROVIDER)
            try:
                while (kind := self._classify(event)) != "end":
                    if kind == "error":
                        raise self.protocol.error(event)
                    if kind == "audio":
                        rep.last_activity = time.monotonic()
                        pcm = decoder.feed(event.audio)
                        if len(pcm):
                            yield pcm
                    event = await self._next(rep.link, rep.context_id, q, self.engine.chunk_timeout)
                complete = True
            finally:
                rep.link.forget(rep.context_id, q)
                rep.last_activity = time.monotonic()
                rep.dirty = rep.dirty or not complete
        except ProviderError as exc:
            self.engine.ctx.health.error(HEALTH, _kind(exc), str(exc))
            raise

    async def cancel(self, reply_id: int) -> None:
        rep = self._replies.pop(reply_id, None)
        if rep is None:
            return
        q = rep.link.queues.get(rep.context_id)
        if q is not None:
            rep.link.forget(rep.context_id, q)
            q.put_nowait(Event("cancelled"))
        if rep.link.failure is None:
            await self._send(rep.link, self.protocol.cancel(rep.context_id), quiet=True)

    async def end_reply(self, reply_id: int) -> None:
        rep = self._replies.pop(reply_id, None)
        if rep is None or rep.link.failure is not None or not rep.flushes:
            return
        last = self.protocol.cancel(rep.context_id) if rep.dirty else self.protocol.generation(rep.context_id, "",
                                                                                              cont=False)
        await self._send(rep.link, last, quiet=True)

    async def aclose(self) -> None:
        self._closed = True
        link, self._link = self._link, None
        if link is not None:
            try:
                await close_socket(link.ws)
            finally:  # even when cancelled
                if link.reader is not None:
                    link.reader.cancel()
                    await asyncio.gather(link.reader, return_exceptions=True)
                for ctx, q in list(link.queues.items()):
                    link.forget(ctx, q)
                    q.put_nowait(Event("cancelled"))


class CartesiaTTS:
    """Shared by every call using this configuration: the HTTP client, the check cache, one socket per call."""

    connect_timeout = 10.0
    first_byte_timeout = 10.0
    chunk_timeout = 10.0
    context_idle = 0.8  # s after a context's last audio: the next sentence starts a fresh context

    def __init__(self, cfg: Any, ctx: ProviderContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.origin = ctx.origin(PROVIDER, cfg, PUBLIC_ORIGIN)
        self.protocol = CartesiaProtocol(cfg, phone=ctx.wants_phone_format(cfg))
        self.sample_rate = self.protocol.sample_rate
        self._http: PerLoop[httpx.AsyncClient] = PerLoop(lambda: httpx.AsyncClient(
            timeout=httpx.Timeout(self.first_byte_timeout, connect=self.connect_timeout)))
        self._check = CheckCache()

    def __repr__(self) -> str:
        return f"CartesiaTTS(origin={self.origin!r}, model={self.protocol.model!r})"

    def _headers(self) -> dict[str, str]:
        key = self.cfg.api_key.get_secret_value() if self.cfg.api_key is not None else ""
        if not key:
            raise ProviderAuthError(PROVIDER, ENV_VAR, "no API key configured")
        return {"X-API-Key": key, "Cartesia-Version": API_VERSION}

    async def open_socket(self) -> ClientConnection:
        headers = self._headers()
        url = ws_origin(self.origin) + WS_PATH
        try:
            return await connect(url, additional_headers=headers, open_timeout=self.connect_timeout,
                                 max_size=2**24, close_timeout=CLOSE_TIMEOUT, logger=_WIRE_LOG, compression=None)
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
            raise http_error(PROVIDER, exc.response.status_code, body, env_var=ENV_VAR) from None
        except asyncio.TimeoutError:
            raise _err("connect timed out", "timeout", retryable=True) from None
        except (OSError, InvalidHandshake) as exc:
            raise _err(f"could not connect ({type(exc).__name__})", "disconnected", retryable=True) from None

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = self._headers()
        try:
            response = await self._http.get().request(method, self.origin + path, headers=headers, **kwargs)
        except httpx.TimeoutException:
            raise _err(f"{path} timed out", "timeout", retryable=True) from None
        except httpx.HTTPError as exc:
            raise _err(f"{path} failed ({type(exc).__name__})", "disconnected", retryable=True) from None
        if response.status_code >= 400:
            raise http_error(PROVIDER, response.status_code, response.text, env_var=ENV_VAR)
        return response

    async def check(self) -> None:
        """``GET /voices?limit=1``: cheap and authenticated. Cached (success 5 min, failure 30 s)."""
        async def probe() -> None:
            try:
                await with_retries(lambda: self._request("GET", "/voices", params={"limit": 1}), provider=PROVIDER)
            except ProviderError as exc:
                self.ctx.health.error(HEALTH, _kind(exc), str(exc))
                raise
            self.ctx.health.ok(HEALTH)

        await self._check.run(probe)

    async def synthesize(self, text: str) -> np.ndarray:
        """A whole sentence through ``POST /tts/bytes`` (raw audio in the response body)."""
        if not text.strip():
            return np.zeros(0, dtype=np.int16)
        try:
            response = await with_retries(
                lambda: self._request("POST", "/tts/bytes", json=self.protocol.request(text)), provider=PROVIDER)
        except ProviderError as exc:
            self.ctx.health.error(HEALTH, _kind(exc), str(exc))
            raise
        self.ctx.health.ok(HEALTH)
        return self.protocol.decoder().feed(response.content)

    async def open_session(self, *, call_id: str) -> CartesiaSession:
        session = CartesiaSession(self, call_id)
        try:
            await with_retries(session.connect, provider=PROVIDER)
        except ProviderError as exc:
            self.ctx.health.error(HEALTH, _kind(exc), str(exc))
            raise
        return session


def create(cfg: Any, ctx: ProviderContext) -> CartesiaTTS:
    return CartesiaTTS(cfg, ctx)
