"""Fish Audio TTS (``TTS.FishAudio``) over its streaming HTTP API.

Each sentence is one ``POST /v1/tts`` (``Authorization: Bearer``; MessagePack body; the ``model`` header picks
the backend) whose chunked response body is the audio, read as it arrives. We ask for ``format: "pcm"`` (16-bit
mono): Fish Audio has no μ-law, but its PCM comes at 8 kHz, so phone calls get ``sample_rate: 8000`` and need no
resampling; other calls get 24 kHz. Jay's fields map as ``model_id`` → ``reference_id`` (the voice model),
``latency`` → ``latency``, ``normalize`` → ``normalize``.

Fish Audio also has a WebSocket "live" API (text streamed in, audio out); telebridge already hands TTS one
sentence at a time, so the HTTP stream (one request per sentence on a warm connection, closed to cancel) gives
the same latency with simpler failure handling. The credential check is ``GET /wallet/self/api-credit``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgpack
import numpy as np

from telebridge.providers.context import PHONE_RATE, ProviderContext
from telebridge.providers.errors import ProviderAuthError, ProviderError, http_error
from telebridge.providers.retry import with_retries
from telebridge.providers.stt.openai import CheckCache, error_kind, provider_error
from telebridge.providers.tts.openai import PCMStreamSession, collect, stream_error

__all__ = ["FishAudioTTS", "create", "BACKEND", "TTS_PATH", "CHECK_PATH"]

PROVIDER = "fishaudio"
ENV_VAR = "FISHAUDIO_API_KEY"
PUBLIC_ORIGIN = "https://api.fish.audio"
HEALTH = "tts.fishaudio"
TTS_PATH = "/v1/tts"
CHECK_PATH = "/wallet/self/api-credit"
BACKEND = "s2-pro"  # the `model` header: Fish Audio's documented default backend
DEFAULT_RATE = 24000
CHUNK_LENGTH = 200  # characters per synthesis segment (documented range 100-300); sentences are shorter


def _not_audio(content_type: str) -> bool:
    ct = content_type.split(";")[0].strip().lower()
    return ct == "application/json" or ct.startswith("text/")


class FishAudioTTS:
    """``TTS.FishAudio``: streamed ``/v1/tts`` as 16-bit PCM (8 kHz on phone calls)."""

    connect_timeout = 5.0
    first_byte_timeout = 6.0
    read_timeout = 10.0

    def __init__(self, cfg: Any, ctx: ProviderContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.origin = ctx.origin(PROVIDER, cfg, PUBLIC_ORIGIN)
        self.sample_rate = PHONE_RATE if ctx.wants_phone_format(cfg) else DEFAULT_RATE
        self._key = cfg.api_key.get_secret_value() if cfg.api_key is not None else None
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._check = CheckCache()

    def __repr__(self) -> str:
        return f"FishAudioTTS(model_id={self.cfg.model_id!r}, origin={self.origin!r}, rate={self.sample_rate})"

    # --- plumbing -------------------------------------------------------------------------------------------
    def _http(self) -> httpx.AsyncClient:
        if not self._key:
            raise ProviderAuthError(PROVIDER, ENV_VAR, "no API key configured")
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.origin, headers={"Authorization": f"Bearer {self._key}"},
                timeout=httpx.Timeout(self.read_timeout, connect=self.connect_timeout))
            self._loop = loop
        return self._client

    def request_body(self, text: str) -> dict[str, Any]:
        """The documented ``TTSRequest`` fields this engine sends."""
        return {
            "text": text,
            "reference_id": self.cfg.model_id,
            "format": "pcm",
            "sample_rate": self.sample_rate,
            "latency": self.cfg.latency,
            "normalize": self.cfg.normalize,
            "chunk_length": CHUNK_LENGTH,
        }

    def _error(self, exc: BaseException, stage: str) -> ProviderError:
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
            return provider_error(PROVIDER, f"{stage} timed out", "timeout", retryable=True)
        if isinstance(exc, (httpx.TransportError, OSError)):
            return provider_error(PROVIDER, f"{stage} failed: connection lost ({type(exc).__name__})",
                                  "disconnected", retryable=True)
        return provider_error(PROVIDER, f"{stage} failed: {type(exc).__name__}", "protocol", retryable=False)

    # --- engine API -----------------------------------------------------------------------------------------
    async def check(self) -> None:
        async def probe() -> None:
            try:
                client = self._http()
                async with asyncio.timeout(self.read_timeout):
                    response = await client.get(CHECK_PATH)
                if response.status_code != 200:
                    raise http_error(PROVIDER, response.status_code, response.text, env_var=ENV_VAR)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                err = self._error(exc, "credential check")
                self.ctx.health.error(HEALTH, error_kind(err), str(err))
                raise err from None
            self.ctx.health.ok(HEALTH)

        await self._check.run(probe)

    async def open_session(self, *, call_id: str) -> PCMStreamSession:
        self._http()
        return PCMStreamSession(self, call_id=call_id)

    async def synthesize(self, text: str) -> np.ndarray:
        if not text.strip():
            return np.zeros(0, dtype=np.int16)
        return await collect(self.byte_stream(text))

    async def _open(self, text: str) -> tuple[contextlib.AsyncExitStack, AsyncIterator[bytes], bytes]:
        body = msgpack.packb(self.request_body(text))
        headers = {"Content-Type": "application/msgpack", "model": BACKEND}

        async def attempt() -> tuple[contextlib.AsyncExitStack, AsyncIterator[bytes], bytes]:
            stack = contextlib.AsyncExitStack()
            try:
                client = self._http()
                async with asyncio.timeout(self.first_byte_timeout):
                    response = await stack.enter_async_context(
                        client.stream("POST", TTS_PATH, content=body, headers=headers))
                    if response.status_code != 200:
                        detail = (await response.aread()).decode("utf-8", "replace")
                        raise http_error(PROVIDER, response.status_code, detail, env_var=ENV_VAR)
                    content_type = response.headers.get("content-type", "")
                    if _not_audio(content_type):
                        raise provider_error(PROVIDER, f"malformed response: {content_type} instead of audio",
                                             "protocol", retryable=False)
                    chunks = response.aiter_bytes()
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
                    raise self._error(exc, "tts request") from None
                raise

        return await with_retries(attempt, provider=PROVIDER)

    async def byte_stream(self, text: str) -> AsyncIterator[bytes]:
        """Raw s16le bytes at ``sample_rate`` as they arrive; ends when the sentence is complete."""
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
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


def create(cfg: Any, ctx: ProviderContext) -> FishAudioTTS:
    return FishAudioTTS(cfg, ctx)
