"""ElevenLabs TTS (``TTS.ElevenLabs``): the multi-context WebSocket for calls, REST for whole sentences. The
messages, formats and Jay's fields are :mod:`telebridge.providers.tts.elevenlabs_protocol`; this is the I/O.

Why the multi-context socket (``/v1/text-to-speech/{voice_id}/multi-stream-input``) and not ``stream-input``:
one socket per call serves every reply (no handshake per reply), and a barge-in is stopped *at the provider*
by closing the reply's context while the socket stays up. Its known weak spot is the cap of 5 open contexts per
socket (exceeding it closes the socket with 1008, as reported against LiveKit's agents). So:

* every sentence gets its own context, and the context is closed right after its text is flushed. The server
  keeps generating a flushed context after ``close_context`` and then sends ``isFinal`` for that context id:
  that is the exact end of the sentence's audio, which ``flush`` alone does not signal. (Counting alignment
  characters is a back-up only: normalisation can change the counts. When the alignment has covered the whole
  text and ``isFinal`` is late, the sentence ends after a short grace.)
* so at most the sentence being spoken plus recently cancelled ones are open; contexts we closed count as open
  until their ``isFinal`` (or a few seconds), and a socket nearing the cap is replaced by a fresh one;
* a socket the server closed (inactivity, 1008, network) is reopened for the next sentence, and a sentence that
  lost its socket before its first audio is retried on a new one: it cannot end the call.

The key travels in the ``xi-api-key`` header, never in the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from telebridge.providers.checks import CheckCache
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import ProviderAuthError, ProviderError, http_error
from telebridge.providers.retry import with_retries
from telebridge.providers.sockets import CLOSE_TIMEOUT, close_socket
from telebridge.providers.tts.elevenlabs_protocol import (
    ENV_VAR, PROVIDER, Protocol, close_error, decoder, format_rate, output_format, server_error,
)

__all__ = ["create", "ElevenLabsEngine", "ElevenLabsSession", "output_format", "Protocol"]

log = logging.getLogger("telebridge.providers.elevenlabs")
# The websockets library logs the handshake's headers (the xi-api-key among them) at DEBUG: its logger for our
# sockets never goes below INFO, whatever the service's log level.
_WIRE_LOG = logging.getLogger("telebridge.providers.elevenlabs.wire")
_WIRE_LOG.setLevel(logging.INFO)

PUBLIC_ORIGIN = "https://api.elevenlabs.io"
HEALTH = "tts.elevenlabs"
MAX_CONTEXTS = 5  # documented per-socket cap
ROTATE_AT = 4  # open a fresh socket before a new context would reach the cap
CLOSED_CONTEXT_TTL = 5.0  # s: a context we closed counts as open until its isFinal, or this long
CONNECT_TIMEOUT = 5.0
FIRST_BYTE_TIMEOUT = 5.0
CHUNK_TIMEOUT = 10.0
FINAL_GRACE = 1.0


_END = object()


class _Conn:
    """One socket: its reader routes each context's messages to that context's queue."""

    def __init__(self, ws: Any, health: Any) -> None:
        self.ws = ws
        self.health = health
        self.routes: dict[str, asyncio.Queue[Any]] = {}
        self.closed_at: dict[str, float] = {}  # contexts we closed, awaiting isFinal
        self.used = False  # the first message (with the voice settings) was sent
        self.dead: BaseException | None = None
        self.reader = asyncio.get_running_loop().create_task(self._read(), name="elevenlabs-reader")

    def open_count(self) -> int:
        now = time.monotonic()
        for cid in [c for c, t in self.closed_at.items() if now - t > CLOSED_CONTEXT_TTL]:
            del self.closed_at[cid]
        return len(self.routes) + len(self.closed_at)

    async def send(self, msg: dict[str, Any]) -> None:
        if self.dead is not None:
            raise self.dead
        try:
            await self.ws.send(json.dumps(msg))
        except Exception as exc:
            self._die(ProviderError(PROVIDER, f"connection lost: {type(exc).__name__}", retryable=True))
            raise self.dead from None  # type: ignore[misc]

    def _die(self, exc: BaseException) -> None:
        if self.dead is None:
            self.dead = exc
        for q in self.routes.values():
            q.put_nowait(exc)

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in self.ws:
                try:
                    kind, cid, value = Protocol.parse(raw)
                except ProviderError as exc:
                    self.health.error(HEALTH, "protocol", str(exc))
                    self._die(exc)
                    return
                if kind == "error":
                    exc = server_error(*value)
                    if cid in self.routes:
                        self.routes[cid].put_nowait(exc)
                    else:
                        self._die(exc)
                elif cid is not None and cid in self.routes and kind in ("audio", "final"):
                    self.routes[cid].put_nowait(value if kind == "audio" else _END)
                elif kind == "final":
                    self.closed_at.pop(cid or "", None)
            code, reason = getattr(self.ws, "close_code", None), getattr(self.ws, "close_reason", "") or ""
            self._closed(code, reason)
        except ConnectionClosed as exc:
            self._closed(exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else "")
        except asyncio.CancelledError:
            self._die(ProviderError(PROVIDER, "session closed"))
            raise
        except Exception as exc:  # pragma: no cover - defensive
            self._die(ProviderError(PROVIDER, f"connection failed: {type(exc).__name__}", retryable=True))

    def _closed(self, code: int | None, reason: str) -> None:
        self._die(close_error(code, reason))

    async def aclose(self, *, graceful: bool = True) -> None:
        """``graceful``: ``close_socket`` first (flushed contexts finish); otherwise just drop the connection,
        which stops every generation on it at once."""
        try:
            with contextlib.suppress(Exception):
                if graceful and self.dead is None:
                    await asyncio.wait_for(self.ws.send(json.dumps(Protocol.close_socket())), 1.0)
            await close_socket(self.ws)
        finally:  # even when cancelled: the socket is aborted by close_socket, the reader ends here
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)


class ElevenLabsSession:
    """One call's ElevenLabs session: one socket reused by every reply (reopened when needed)."""

    def __init__(self, engine: ElevenLabsEngine, call_id: str) -> None:
        self.engine = engine
        self.call_id = call_id
        self.sample_rate = engine.sample_rate
        self._conn: _Conn | None = None
        self._lock = asyncio.Lock()
        self._retired: set[asyncio.Task[None]] = set()
        self._replies: dict[int, set[str]] = {}
        self._n = 0
        self._closing = False
        self.connects = 0

    async def connect(self) -> _Conn:
        async with self._lock:
            if self._closing:
                raise ProviderError(PROVIDER, "session closed")
            conn = self._conn
            if conn is not None and conn.dead is None and conn.open_count() < ROTATE_AT:
                return conn
            if conn is not None:  # dead, or close to the context cap: replace it
                self._retire(conn)
            ws = await self.engine.open_socket()
            if self._closing:  # the call ended while we were connecting: nobody would ever close this socket
                await close_socket(ws)
                raise ProviderError(PROVIDER, "session closed")
            self._conn = conn = _Conn(ws, self.engine.ctx.health)
            self.connects += 1
            return conn

    def _retire(self, conn: _Conn, *, graceful: bool = True) -> None:
        self._spawn(conn.aclose(graceful=graceful), "elevenlabs-retire")

    async def stream(self, text: str, *, reply_id: int) -> AsyncIterator[np.ndarray]:
        text = " ".join(text.split())
        if not text:
            return
        health = self.engine.ctx.health
        started = time.monotonic()

        async def attempt() -> tuple[_Conn, str, asyncio.Queue[Any], Any]:
            conn = await self.connect()
            self._n += 1
            cid = f"{self.call_id[-12:]}-{reply_id}-{self._n}"
            queue: asyncio.Queue[Any] = asyncio.Queue()
            conn.routes[cid] = queue
            self._replies.setdefault(reply_id, set()).add(cid)
            try:
                first = not conn.used
                conn.used = True
                await conn.send(self.engine.protocol.open_context(cid, first_on_socket=first))
                await conn.send(Protocol.send_text(cid, text))
                await conn.send(Protocol.close_context(cid))
                async with asyncio.timeout(self.engine.first_byte_timeout):  # not wait_for (pipeline/call_tasks.py)
                    item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                return conn, cid, queue, item
            except BaseException as exc:
                self._drop(conn, cid, reply_id, finished=False)
                if isinstance(exc, asyncio.TimeoutError):
                    health.error(HEALTH, "timeout", "no audio before the first-byte timeout")
                    raise ProviderError(PROVIDER, "no audio before the first-byte timeout", retryable=True) from None
                raise

        conn, cid, queue, item = await with_retries(attempt, provider=PROVIDER, policy=self.engine.retry_policy)
        log.debug("call %s: elevenlabs first audio after %.0f ms", self.call_id, 1000 * (time.monotonic() - started))
        audio_decoder = decoder(self.engine.fmt)
        chars = 0
        finished = False
        try:
            while True:
                if item is _END:
                    finished = True
                    break
                if isinstance(item, BaseException):
                    kind = "auth" if isinstance(item, ProviderAuthError) else "disconnected"
                    health.error(HEALTH, kind, str(item))
                    raise ProviderError(PROVIDER, f"sentence cut off: {str(item).removeprefix(PROVIDER + ': ')}") \
                        if kind != "auth" else item
                audio, aligned = item
                chars += aligned
                pcm = audio_decoder.feed(audio)
                if len(pcm):
                    yield pcm
                wait = FINAL_GRACE if chars >= len(text) else CHUNK_TIMEOUT
                try:
                    async with asyncio.timeout(wait):  # not wait_for: it can lose a cancel on 3.11
                        item = await queue.get()
                except TimeoutError:
                    if wait == FINAL_GRACE:  # the alignment covered every character: the audio is complete
                        break
                    health.error(HEALTH, "timeout", "the audio stalled mid-sentence")
                    raise ProviderError(PROVIDER, "the audio stalled mid-sentence") from None
            tail = audio_decoder.flush()
            if len(tail):
                yield tail
        finally:
            self._drop(conn, cid, reply_id, finished=finished)

    def _drop(self, conn: _Conn, cid: str, reply_id: int, *, finished: bool) -> None:
        """Forget a sentence's context; unless its isFinal came, it counts as open for a while longer."""
        conn.routes.pop(cid, None)
        if not finished:
            conn.closed_at[cid] = time.monotonic()
        ids = self._replies.get(reply_id)
        if ids is not None:
            ids.discard(cid)
            if not ids:
                self._replies.pop(reply_id, None)

    async def cancel(self, reply_id: int) -> None:
        """Barge-in: stop the reply at the provider and end its streams quietly.

        The reply's later sentences are simply never sent. A sentence still generating was closed right after its
        flush, and the service finishes a flushed context even after ``close_context``; so when one is in
        flight (and nothing else uses the socket) the socket itself is closed -- that stops the generation
        at once and frees every context -- and a fresh one is opened in the background for the next reply.
        """
        conn = self._conn
        ids = self._replies.pop(reply_id, set())
        if conn is None or not ids:
            return
        in_flight = [cid for cid in ids if cid in conn.routes]
        for cid in in_flight:
            conn.routes.pop(cid).put_nowait(_END)
            conn.closed_at[cid] = time.monotonic()
            with contextlib.suppress(Exception):
                await conn.send(Protocol.close_context(cid))
        if in_flight and not conn.routes and conn is self._conn:
            self._conn = None
            self._retire(conn, graceful=False)
            self._spawn(self._warm(), "elevenlabs-reconnect")

    async def _warm(self) -> None:
        with contextlib.suppress(ProviderError):
            await self.connect()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.call_id}:{name}")
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def end_reply(self, reply_id: int) -> None:
        return None  # every sentence's context is already closed once its text is flushed

    async def aclose(self) -> None:
        self._closing = True
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()
        pending = list(self._retired)
        if pending:
            _, late = await asyncio.wait(pending, timeout=3.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


class ElevenLabsEngine:
    def __init__(self, cfg: Any, ctx: ProviderContext) -> None:
        from telebridge.providers.retry import DEFAULT_POLICY

        self.cfg = cfg
        self.ctx = ctx
        self.origin = ctx.origin(PROVIDER, cfg, PUBLIC_ORIGIN)
        self.fmt = output_format(cfg, ctx)
        self.sample_rate = format_rate(self.fmt)
        self.protocol = Protocol(cfg, self.fmt)
        self.retry_policy = DEFAULT_POLICY
        self.connect_timeout = CONNECT_TIMEOUT
        self.first_byte_timeout = FIRST_BYTE_TIMEOUT
        self._http: Any = None
        self._check = CheckCache()

    def __repr__(self) -> str:
        return f"ElevenLabsEngine(voice={self.cfg.voice.id!r}, model={self.cfg.model!r}, format={self.fmt!r})"

    def _key(self) -> str:
        key = self.cfg.api_key.get_secret_value() if self.cfg.api_key is not None else ""
        if not key:
            raise ProviderAuthError(PROVIDER, ENV_VAR, "no API key configured")
        return key

    def _client(self) -> Any:
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=self.connect_timeout))
        return self._http

    async def check(self) -> None:
        """GET /v1/user (cached: success for 5 minutes, failure for 30 s)."""
        async def probe() -> None:
            try:
                response = await self._client().get(f"{self.origin}/v1/user", headers={"xi-api-key": self._key()})
                # A key scoped to text-to-speech may lack user_read: it was accepted, which is all we check.
                if response.status_code >= 400 and "missing_permissions" not in response.text:
                    raise http_error(PROVIDER, response.status_code, response.text, env_var=ENV_VAR)
            except ProviderError as exc:
                self.ctx.health.error(HEALTH, "auth" if isinstance(exc, ProviderAuthError) else "server", str(exc))
                raise
            except Exception as exc:
                raise ProviderError(PROVIDER, f"check failed: {type(exc).__name__}", retryable=True) from exc

        await self._check.run(probe)

    async def open_socket(self) -> Any:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        try:
            return await asyncio.wait_for(
                connect(self.protocol.url(self.origin), additional_headers={"xi-api-key": self._key()},
                        open_timeout=self.connect_timeout, proxy=None, max_size=None, ping_interval=20,
                        close_timeout=CLOSE_TIMEOUT, logger=_WIRE_LOG, compression=None),
                self.connect_timeout + 1)
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
            err = http_error(PROVIDER, status, body, env_var=ENV_VAR)
            self.ctx.health.error(HEALTH, "auth" if isinstance(err, ProviderAuthError) else (
                "rate_limited" if status == 429 else "server"), str(err))
            raise err from None
        except (asyncio.TimeoutError, OSError) as exc:
            self.ctx.health.error(HEALTH, "timeout" if isinstance(exc, asyncio.TimeoutError) else "disconnected",
                                  type(exc).__name__)
            raise ProviderError(PROVIDER, f"cannot connect: {type(exc).__name__}", retryable=True) from None

    async def open_session(self, *, call_id: str) -> ElevenLabsSession:
        session = ElevenLabsSession(self, call_id)
        with contextlib.suppress(ProviderError):  # warm the socket; a failure shows on the first sentence
            if self._check.last_error is None:
                await session.connect()
        return session

    async def synthesize(self, text: str) -> np.ndarray:
        """A whole sentence over REST (``POST /v1/text-to-speech/{voice_id}/stream``)."""
        text = " ".join(text.split())
        if not text:
            return np.zeros(0, dtype=np.int16)
        url, body = self.protocol.rest_url(self.origin), self.protocol.rest_body(text)

        async def attempt() -> bytes:
            response = await self._client().post(url, params={"output_format": self.fmt}, json=body,
                                                 headers={"xi-api-key": self._key()})
            if response.status_code >= 400:
                raise http_error(PROVIDER, response.status_code, response.text, env_var=ENV_VAR)
            return response.content

        audio = await with_retries(attempt, provider=PROVIDER, policy=self.retry_policy)
        whole = decoder(self.fmt)
        pcm = np.concatenate([whole.feed(audio), whole.flush()])
        self.ctx.health.ok(HEALTH)
        return pcm


def create(cfg: Any, ctx: ProviderContext) -> ElevenLabsEngine:
    return ElevenLabsEngine(cfg, ctx)
