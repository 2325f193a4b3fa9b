"""TTS over "one streamed HTTP request per sentence" (OpenAI speech, Fish Audio): raw s16le PCM read as it arrives.

An engine supplies ``sample_rate`` and ``byte_stream(text)``: an async generator of the sentence's raw bytes,
built with :func:`stream_audio` (the request is retried until its first audio byte; after that a failure is
final, since the caller already heard the start). :class:`PCMStreamSession` is the call's session over such an
engine: each sentence's request runs in a producer task, and stopping a reply cancels its producers, which
closes their responses -- that is how the provider learns to stop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np

from telebridge.providers.errors import TIMEOUT_ERRORS, ProviderError, error_kind, provider_error
from telebridge.providers.retry import with_retries
from telebridge.providers.tts.decoding import RawDecoder, pcm16

__all__ = ["PCMStreamSession", "require_audio", "stream_audio", "stream_error", "whole_sentence"]

log = logging.getLogger("telebridge.providers")

_END = object()
_QUEUE_CHUNKS = 64


def require_audio(provider: str, content_type: str) -> None:
    """A JSON or text body where audio was due is an error report, not sound."""
    ct = content_type.split(";")[0].strip().lower()
    if ct == "application/json" or ct.startswith("text/"):
        raise provider_error(provider, f"malformed response: {content_type} instead of audio", "protocol",
                             retryable=False)


def stream_error(provider: str, exc: BaseException) -> ProviderError:
    """A failure after audio started flowing: never retried (the caller already heard the start)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, TIMEOUT_ERRORS):
        return provider_error(provider, "audio stream stalled (read timeout)", "timeout", retryable=False)
    return provider_error(provider, f"audio stream ended early: connection lost ({type(exc).__name__})",
                          "disconnected", retryable=False)


_Opened = tuple[contextlib.AsyncExitStack, AsyncIterator[bytes], bytes]


async def _open(provider: str, enter: Callable[[contextlib.AsyncExitStack], Awaitable[AsyncIterator[bytes]]],
                timeout: float, error: Callable[[Exception], ProviderError]) -> _Opened:
    async def attempt() -> _Opened:
        stack = contextlib.AsyncExitStack()
        try:
            async with asyncio.timeout(timeout):
                chunks = await enter(stack)
                first = b""
                while not first:
                    try:
                        first = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
            return stack, chunks, first
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, Exception):
                raise error(exc) from None
            raise

    return await with_retries(attempt, provider=provider)


async def stream_audio(provider: str, enter: Callable[[contextlib.AsyncExitStack], Awaitable[AsyncIterator[bytes]]],
                       *, first_byte_timeout: float, error: Callable[[Exception], ProviderError], health: Any,
                       health_name: str) -> AsyncIterator[bytes]:
    """One sentence's raw bytes as they arrive; ends when the sentence is complete.

    ``enter(stack)`` sends the request, enters its response into ``stack``, checks the status and content type,
    and returns the body's chunk iterator. Until the first audio byte (within ``first_byte_timeout``) every
    failure is mapped by ``error`` and retried when retryable; after it, a failure is a :func:`stream_error`.
    Outcomes are reported to ``health`` under ``health_name``.
    """
    try:
        stack, chunks, first = await _open(provider, enter, first_byte_timeout, error)
    except ProviderError as exc:
        health.error(health_name, error_kind(exc), str(exc))
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
                err = stream_error(provider, exc)
                health.error(health_name, error_kind(err), str(err))
                raise err from None
            if data:
                yield data
    health.ok(health_name)


async def whole_sentence(engine: Any, text: str) -> np.ndarray:
    """``engine.synthesize``: the whole sentence from ``engine.byte_stream(text)``, int16 mono (blank text: no
    request)."""
    if not text.strip():
        return np.zeros(0, dtype=np.int16)
    buf = bytearray()
    async for data in engine.byte_stream(text):
        buf.extend(data)
    return pcm16(bytes(buf))


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
        decoder = RawDecoder("pcm")
        gen = self.engine.byte_stream(text)
        try:
            async for data in gen:
                pcm = decoder.feed(data)
                if len(pcm):
                    await queue.put(pcm)
            if decoder.carry:
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
