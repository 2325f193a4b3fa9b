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

from telebridge.providers.checks import CheckCache
from telebridge.providers.context import PHONE_RATE, ProviderContext
from telebridge.providers.errors import ProviderAuthError, error_kind, http_error, request_error
from telebridge.providers.per_loop import PerLoop
from telebridge.providers.tts.http_stream import PCMStreamSession, require_audio, stream_audio, whole_sentence

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
        self._clients: PerLoop[httpx.AsyncClient] = PerLoop(lambda: httpx.AsyncClient(
            base_url=self.origin, headers={"Authorization": f"Bearer {self._key}"},
            timeout=httpx.Timeout(self.read_timeout, connect=self.connect_timeout)))
        self._check = CheckCache()

    def __repr__(self) -> str:
        return f"FishAudioTTS(model_id={self.cfg.model_id!r}, origin={self.origin!r}, rate={self.sample_rate})"

    # --- plumbing -------------------------------------------------------------------------------------------
    def _http(self) -> httpx.AsyncClient:
        if not self._key:
            raise ProviderAuthError(PROVIDER, ENV_VAR, "no API key configured")
        return self._clients.get()

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
                err = request_error(PROVIDER, exc, "credential check")
                self.ctx.health.error(HEALTH, error_kind(err), str(err))
                raise err from None
            self.ctx.health.ok(HEALTH)

        await self._check.run(probe)

    async def open_session(self, *, call_id: str) -> PCMStreamSession:
        self._http()
        return PCMStreamSession(self, call_id=call_id)

    async def synthesize(self, text: str) -> np.ndarray:
        return await whole_sentence(self, text)

    def byte_stream(self, text: str) -> AsyncIterator[bytes]:
        """Raw s16le bytes at ``sample_rate`` as they arrive; ends when the sentence is complete."""
        body = msgpack.packb(self.request_body(text))
        headers = {"Content-Type": "application/msgpack", "model": BACKEND}

        async def enter(stack: contextlib.AsyncExitStack) -> AsyncIterator[bytes]:
            response = await stack.enter_async_context(
                self._http().stream("POST", TTS_PATH, content=body, headers=headers))
            if response.status_code != 200:
                detail = (await response.aread()).decode("utf-8", "replace")
                raise http_error(PROVIDER, response.status_code, detail, env_var=ENV_VAR)
            require_audio(PROVIDER, response.headers.get("content-type", ""))
            return response.aiter_bytes()

        return stream_audio(PROVIDER, enter, first_byte_timeout=self.first_byte_timeout,
                            error=lambda exc: request_error(PROVIDER, exc, "tts request"), health=self.ctx.health,
                            health_name=HEALTH)

    async def aclose(self) -> None:
        client = self._clients.take()
        if client is not None:
            await client.aclose()


def create(cfg: Any, ctx: ProviderContext) -> FishAudioTTS:
    return FishAudioTTS(cfg, ctx)
