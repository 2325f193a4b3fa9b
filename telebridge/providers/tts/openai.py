"""OpenAI speech (``TTS.OpenAI``) through the official async SDK, streamed.

Each sentence is one ``POST /v1/audio/speech`` with ``response_format: "pcm"`` (raw 24 kHz s16le mono; OpenAI
offers no μ-law, so phone calls get 24 kHz and telebridge's resampler does the rest), read as the bytes arrive.
A call's session reuses the engine's SDK client (its warm connection pool); stopping a reply closes its open
responses, which is how OpenAI learns to stop.

:class:`PCMStreamSession` is generic over "one streamed HTTP request per sentence" engines (Fish Audio uses it
too): the engine supplies ``byte_stream(text)`` -- an async generator that opens the request (retried until its
first audio byte) and yields raw s16le bytes -- and the session turns it into int16 chunks, keeping an odd
trailing byte for the next chunk.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import ProviderError
from telebridge.providers.retry import with_retries
from telebridge.providers.stt.openai import PROVIDER, TIMEOUT_ERRORS, OpenAIAccess, error_kind, provider_error

__all__ = ["OpenAITTS", "PCMStreamSession", "collect", "create", "stream_error", "OPENAI_PCM_RATE"]

log = logging.getLogger("telebridge.providers.openai")

OPENAI_PCM_RATE = 24000
HEALTH = "tts.openai"
_END = object()
_QUEUE_CHUNKS = 64


def _not_audio(content_type: str) -> bool:
    ct = content_type.split(";")[0].strip().lower()
    return ct in ("application/json", "text/event-stream") or ct.startswith("text/")


class PCMStreamSession:
    """A call's session over an engine with ``sample_rate`` and ``byte_stream(text)`` (raw s16le bytes).

    Each :meth:`stream` runs its request in a producer task feeding a bounded queue; :meth:`cancel` cancels the
    reply's producers (which closes their responses: the provider stops) and ends their streams quietly.
    """

    def __init__(self, engine: Any, *, call_id: str) -> None:
        self.engine = engine
        self.call_id = call_id
        self.sample_rate: int = engine.sample_rate
        self._active: dict[int, list[tuple[asyncio.Task[None], asyncio.Queue[Any]]]] = {}
        self._cancelled: collections.deque[int] = collections.deque(maxlen=32)
        self._closed = False

    async def stream(self, text: str, *, reply_id: int) -> AsyncIterator[np.ndarray]:
        if not text.strip() or self._closed or reply_id in self._cancelled:
            return
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=_QUEUE_CHUNKS)
        task = asyncio.get_running_loop().create_task(self._produce(text, queue),
                                                      name=f"{self.call_id}:tts-{reply_id}")
        entry = (task, queue)
        self._active.setdefault(reply_id, []).append(entry)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            entries = self._active.get(reply_id)
            if entries is not None:
                with contextlib.suppress(ValueError):
                    entries.remove(entry)
                if not entries:
                    self._active.pop(reply_id, None)
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _produce(self, text: str, queue: asyncio.Queue[Any]) -> None:
        carry = b""
        gen = self.engine.byte_stream(text)
        try:
            async for data in gen:
                data = carry + data
                n = len(data) & ~1
                carry = data[n:]
                if n:
                    await queue.put(np.frombuffer(data[:n], dtype="<i2").astype(np.int16))
            if carry:
                log.debug("%s: dropped a stray trailing byte", self.call_id)
            await queue.put(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await queue.put(exc)
        finally:
            await gen.aclose()

    async def cancel(self, reply_id: int) -> None:
        self._cancelled.append(reply_id)
        for task, queue in list(self._active.get(reply_id, [])):
            self._stop(task, queue)

    @staticmethod
    def _stop(task: asyncio.Task[None], queue: asyncio.Queue[Any]) -> None:
        task.cancel()
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                break
        queue.put_nowait(_END)

    async def end_reply(self, reply_id: int) -> None:
        return None

    async def aclose(self) -> None:
        self._closed = True
        tasks = []
        for entries in list(self._active.values()):
            for task, queue in list(entries):
                self._stop(task, queue)
                tasks.append(task)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def stream_error(provider: str, exc: BaseException) -> ProviderError:
    """A failure after audio started flowing: never retried (the caller already heard the start)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, TIMEOUT_ERRORS):
        return provider_error(provider, "audio stream stalled (read timeout)", "timeout", retryable=False)
    return provider_error(provider, f"audio stream ended early: connection lost ({type(exc).__name__})",
                          "disconnected", retryable=False)


async def collect(byte_stream: AsyncIterator[bytes]) -> np.ndarray:
    """A whole sentence from ``byte_stream``: int16 mono."""
    buf = bytearray()
    async for data in byte_stream:
        buf.extend(data)
    n = len(buf) & ~1
    return np.frombuffer(bytes(buf[:n]), dtype="<i2").astype(np.int16)


class OpenAITTS:
    """``TTS.OpenAI``: streamed ``/v1/audio/speech`` as 24 kHz PCM."""

    connect_timeout = 5.0
    first_byte_timeout = 5.0
    read_timeout = 10.0  # between chunks, once audio flows

    def __init__(self, cfg: Any, ctx: ProviderContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.sample_rate = OPENAI_PCM_RATE
        self.access = OpenAIAccess(cfg, ctx, health_name=HEALTH, read_timeout=self.read_timeout,
                                   connect_timeout=self.connect_timeout)

    def __repr__(self) -> str:
        return f"OpenAITTS(model={self.cfg.model!r}, voice={self.cfg.voice!r}, base_url={self.access.base_url!r})"

    async def check(self) -> None:
        await self.access.check()

    async def open_session(self, *, call_id: str) -> PCMStreamSession:
        self.access.client()  # create the client now (raises at once when no key is configured)
        return PCMStreamSession(self, call_id=call_id)

    async def synthesize(self, text: str) -> np.ndarray:
        if not text.strip():
            return np.zeros(0, dtype=np.int16)
        return await collect(self.byte_stream(text))

    async def _open(self, text: str) -> tuple[contextlib.AsyncExitStack, AsyncIterator[bytes], bytes]:
        """Send the request and wait for its first audio byte (retried until then)."""
        cfg = self.cfg

        async def attempt() -> tuple[contextlib.AsyncExitStack, AsyncIterator[bytes], bytes]:
            stack = contextlib.AsyncExitStack()
            try:
                client = self.access.client()
                async with asyncio.timeout(self.first_byte_timeout):
                    response = await stack.enter_async_context(
                        client.audio.speech.with_streaming_response.create(
                            model=cfg.model, voice=cfg.voice, input=text, response_format="pcm", speed=cfg.speed))
                    content_type = response.headers.get("content-type", "")
                    if _not_audio(content_type):
                        raise provider_error(PROVIDER, f"malformed response: {content_type} instead of audio",
                                             "protocol", retryable=False)
                    chunks = response.iter_bytes()
                    first = b""
                    while not first:
                        try:
                            first = await chunks.__anext__()
                        except StopAsyncIteration:
                            break
                return stack, chunks, first
            except BaseException as exc:
                await stack.aclose()
                if isinstance(exc, asyncio.CancelledError):
                    raise
                if isinstance(exc, Exception):
                    raise self.access.error(exc, stage="speech request") from None
                raise

        return await with_retries(attempt, provider=PROVIDER)

    async def byte_stream(self, text: str) -> AsyncIterator[bytes]:
        """Raw s16le bytes of ``text`` as they arrive; ends when the sentence is complete."""
        try:
            stack, chunks, first = await self._open(text)
        except ProviderError as exc:
            self.ctx.health.error(HEALTH, error_kind(exc), str(exc))
            raise
        async with stack:
            if first:
                yield first
            while True:
                try:
                    data = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    err = stream_error(PROVIDER, exc)
                    self.ctx.health.error(HEALTH, error_kind(err), str(err))
                    raise err from None
                if data:
                    yield data
        self.ctx.health.ok(HEALTH)

    async def aclose(self) -> None:
        await self.access.aclose()


def create(cfg: Any, ctx: ProviderContext) -> OpenAITTS:
    return OpenAITTS(cfg, ctx)

