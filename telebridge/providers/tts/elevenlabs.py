"""ElevenLabs TTS (``TTS.ElevenLabs``): the multi-context WebSocket for calls, REST for whole sentences.

Jay fields: ``voice.id`` → the URL's voice, ``voice.settings`` → ``voice_settings``, ``model`` → ``model_id``,
``encoding`` → ``output_format``, ``enable_ssml_parsing`` → the query flag, ``chunk_length_schedule`` →
``generation_config``. Phone calls ask for ``ulaw_8000`` (unless the agent set ``encoding``); otherwise the
default ``mp3_22050_32`` becomes ``pcm_22050`` (same rate, no decoder). An explicit mp3 is decoded with PyAV.

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

``voice_settings`` and ``generation_config`` go in the socket's first message only (the service rejects later
changes with 1008). The key travels in the ``xi-api-key`` header, never in the URL.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np

from telebridge.audio.g711 import ulaw_decode
from telebridge.providers.context import ProviderContext, ws_origin
from telebridge.providers.errors import ProviderAuthError, ProviderConfigError, ProviderError, http_error
from telebridge.providers.retry import with_retries

__all__ = ["create", "ElevenLabsEngine", "ElevenLabsSession", "output_format", "Protocol"]

log = logging.getLogger("telebridge.providers.elevenlabs")
# The websockets library logs the handshake's headers (the xi-api-key among them) at DEBUG: its logger for our
# sockets never goes below INFO, whatever the service's log level.
_WIRE_LOG = logging.getLogger("telebridge.providers.elevenlabs.wire")
_WIRE_LOG.setLevel(logging.INFO)

PROVIDER = "elevenlabs"
ENV_VAR = "ELEVENLABS_API_KEY"
PUBLIC_ORIGIN = "https://api.elevenlabs.io"
HEALTH = "tts.elevenlabs"
MAX_CONTEXTS = 5  # documented per-socket cap
ROTATE_AT = 4  # open a fresh socket before a new context would reach the cap
CLOSED_CONTEXT_TTL = 5.0  # s: a context we closed counts as open until its isFinal, or this long
CONNECT_TIMEOUT = 5.0
FIRST_BYTE_TIMEOUT = 5.0
CHUNK_TIMEOUT = 10.0
FINAL_GRACE = 1.0
CHECK_OK_TTL, CHECK_FAIL_TTL = 300.0, 30.0
_AUTH_WORDS = ("api key", "api_key", "unauthorized", "authentication", "auth_error", "invalid_key")


def output_format(cfg: Any, ctx: ProviderContext) -> str:
    if ctx.wants_phone_format(cfg):
        return "ulaw_8000"
    if "encoding" in cfg.model_fields_set:
        return str(cfg.encoding)
    return f"pcm_{format_rate(cfg.encoding)}"


def format_rate(fmt: str) -> int:
    return int(fmt.split("_")[1])


def _is_auth(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in _AUTH_WORDS)


class Decoder:
    """One sentence's audio bytes (any output_format) → int16 mono at the format's rate, chunk by chunk."""

    def __init__(self, fmt: str) -> None:
        self.kind = fmt.split("_")[0]
        self.rate = format_rate(fmt)
        self._carry = b""
        self._bad = self._good = 0
        self._codec: Any = None
        self._resampler: Any = None
        if self.kind == "mp3":
            import av

            self._codec = av.CodecContext.create("mp3", "r")
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
        elif self.kind not in ("pcm", "ulaw"):
            raise ProviderConfigError(PROVIDER, f"output format {fmt!r} is not supported here")

    def feed(self, data: bytes) -> np.ndarray:
        if self.kind == "ulaw":
            return ulaw_decode(data)
        if self.kind == "pcm":
            data = self._carry + data
            cut = len(data) - len(data) % 2
            self._carry = data[cut:]
            return np.frombuffer(data[:cut], dtype="<i2").astype(np.int16)
        return self._mp3(data)

    def flush(self) -> np.ndarray:
        return self._mp3(None) if self.kind == "mp3" else np.zeros(0, dtype=np.int16)

    def _mp3(self, data: bytes | None) -> np.ndarray:
        import av

        out = []
        try:
            packets = list(self._codec.parse(data)) if data is not None else [None]
        except Exception as exc:  # FFmpeg errors
            raise ProviderError(PROVIDER, f"undecodable mp3 audio: {exc}") from exc
        for packet in packets:
            try:
                frames = self._codec.decode(packet)
            except av.error.InvalidDataError:  # an ID3 tag or a broken frame: skip it, as players do
                self._bad += 1
                if self._bad > 8 and not self._good:
                    raise ProviderError(PROVIDER, "undecodable mp3 audio") from None
                continue
            for frame in frames:
                self._good += 1
                for res in self._resampler.resample(frame):
                    out.append(res.to_ndarray().reshape(-1))
        return np.concatenate(out).astype(np.int16) if out else np.zeros(0, dtype=np.int16)


class Protocol:
    """Sans-I/O: the multi-context socket's URL and messages, and parsing of what the server sends."""

    def __init__(self, cfg: Any, fmt: str) -> None:
        self.cfg = cfg
        self.fmt = fmt

    def url(self, origin: str) -> str:
        query = urlencode({"model_id": self.cfg.model, "output_format": self.fmt,
                           "enable_ssml_parsing": str(self.cfg.enable_ssml_parsing).lower(),
                           "inactivity_timeout": 180})
        return f"{ws_origin(origin)}/v1/text-to-speech/{quote(self.cfg.voice.id, safe='')}/multi-stream-input?{query}"

    def voice_settings(self) -> dict[str, Any] | None:
        settings = self.cfg.voice.settings
        return settings.model_dump() if settings is not None else None

    def open_context(self, cid: str, *, first_on_socket: bool) -> dict[str, Any]:
        msg: dict[str, Any] = {"text": " ", "context_id": cid}
        if first_on_socket:
            settings = self.voice_settings()
            if settings is not None:
                msg["voice_settings"] = settings
            msg["generation_config"] = {"chunk_length_schedule": list(self.cfg.chunk_length_schedule)}
        return msg

    @staticmethod
    def send_text(cid: str, text: str) -> dict[str, Any]:
        return {"text": text + " ", "context_id": cid, "flush": True}

    @staticmethod
    def close_context(cid: str) -> dict[str, Any]:
        return {"context_id": cid, "close_context": True}

    @staticmethod
    def parse(raw: str | bytes) -> tuple[str, str | None, Any]:
        """→ ("audio", cid, (bytes, aligned_chars)) | ("final", cid, None) | ("error", cid, (message, code))."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            cid = data.get("contextId", data.get("context_id"))
            if data.get("error") or (data.get("message") and "audio" not in data):
                return "error", cid, (str(data.get("message") or data.get("error")), data.get("error"))
            if data.get("audio"):
                alignment = data.get("alignment") or {}
                chars = alignment.get("chars") or []
                return "audio", cid, (base64.b64decode(data["audio"], validate=True), len(chars))
            if data.get("isFinal") or data.get("is_final"):
                return "final", cid, None
            return "other", cid, None
        except (ValueError, TypeError, binascii.Error) as exc:
            raise ProviderError(PROVIDER, f"malformed message from the server: {exc}") from None


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
                    message, code = value
                    exc = (ProviderAuthError(PROVIDER, ENV_VAR) if _is_auth(f"{message} {code}")
                           else ProviderError(PROVIDER, f"server error: {message}"[:200],
                                              retryable=code in ("max_active_conversations", "rate_limited")))
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
        if code == 1008 and _is_auth(reason):
            self._die(ProviderAuthError(PROVIDER, ENV_VAR, "credentials refused (WebSocket 1008)"))
        else:
            detail = f"connection closed ({code}{': ' + reason[:120] if reason else ''})"
            self._die(ProviderError(PROVIDER, detail, retryable=True))

    async def aclose(self, *, graceful: bool = True) -> None:
        """``graceful``: ``close_socket`` first (flushed contexts finish); otherwise just drop the connection,
        which stops every generation on it at once."""
        with contextlib.suppress(Exception):
            if graceful and self.dead is None:
                await asyncio.wait_for(self.ws.send(json.dumps({"close_socket": True})), 1.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2.0)
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader


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
            self._conn = conn = _Conn(await self.engine.open_socket(), self.engine.ctx.health)
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
                item = await asyncio.wait_for(queue.get(), self.engine.first_byte_timeout)
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
        decoder = Decoder(self.engine.fmt)
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
                pcm = decoder.feed(audio)
                if len(pcm):
                    yield pcm
                wait = FINAL_GRACE if chars >= len(text) else CHUNK_TIMEOUT
                try:
                    item = await asyncio.wait_for(queue.get(), wait)
                except asyncio.TimeoutError:
                    if wait == FINAL_GRACE:  # the alignment covered every character: the audio is complete
                        break
                    health.error(HEALTH, "timeout", "the audio stalled mid-sentence")
                    raise ProviderError(PROVIDER, "the audio stalled mid-sentence") from None
            tail = decoder.flush()
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
        self._checked: tuple[float, BaseException | None] | None = None

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
        now = time.monotonic()
        if self._checked is not None:
            at, err = self._checked
            if now - at < (CHECK_FAIL_TTL if err else CHECK_OK_TTL):
                if err is not None:
                    raise err
                return
        try:
            response = await self._client().get(f"{self.origin}/v1/user", headers={"xi-api-key": self._key()})
            # A key scoped to text-to-speech may lack user_read: it was accepted, which is all we check.
            if response.status_code >= 400 and "missing_permissions" not in response.text:
                raise http_error(PROVIDER, response.status_code, response.text, env_var=ENV_VAR)
        except ProviderError as exc:
            self._checked = (now, exc)
            self.ctx.health.error(HEALTH, "auth" if isinstance(exc, ProviderAuthError) else "server", str(exc))
            raise
        except Exception as exc:
            err = ProviderError(PROVIDER, f"check failed: {type(exc).__name__}", retryable=True)
            self._checked = (now, err)
            raise err from exc
        self._checked = (now, None)

    async def open_socket(self) -> Any:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        try:
            return await asyncio.wait_for(
                connect(self.protocol.url(self.origin), additional_headers={"xi-api-key": self._key()},
                        open_timeout=self.connect_timeout, proxy=None, max_size=None, ping_interval=20,
                        logger=_WIRE_LOG),
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
            if not isinstance(self._checked, tuple) or self._checked[1] is None:
                await session.connect()
        return session

    async def synthesize(self, text: str) -> np.ndarray:
        """A whole sentence over REST (``POST /v1/text-to-speech/{voice_id}/stream``)."""
        text = " ".join(text.split())
        if not text:
            return np.zeros(0, dtype=np.int16)
        url = f"{self.origin}/v1/text-to-speech/{quote(self.cfg.voice.id, safe='')}/stream"
        body: dict[str, Any] = {"text": text, "model_id": self.cfg.model}
        if self.protocol.voice_settings() is not None:
            body["voice_settings"] = self.protocol.voice_settings()

        async def attempt() -> bytes:
            response = await self._client().post(url, params={"output_format": self.fmt}, json=body,
                                                 headers={"xi-api-key": self._key()})
            if response.status_code >= 400:
                raise http_error(PROVIDER, response.status_code, response.text, env_var=ENV_VAR)
            return response.content

        audio = await with_retries(attempt, provider=PROVIDER, policy=self.retry_policy)
        decoder = Decoder(self.fmt)
        pcm = np.concatenate([decoder.feed(audio), decoder.flush()])
        self.ctx.health.ok(HEALTH)
        return pcm


def create(cfg: Any, ctx: ProviderContext) -> ElevenLabsEngine:
    return ElevenLabsEngine(cfg, ctx)
