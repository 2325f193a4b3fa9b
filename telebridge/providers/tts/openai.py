"""OpenAI speech (``TTS.OpenAI``) through the official async SDK, streamed.

Each sentence is one ``POST /v1/audio/speech`` with ``response_format: "pcm"`` (raw 24 kHz s16le mono; OpenAI
offers no μ-law, so phone calls get 24 kHz and telebridge's resampler does the rest), read as the bytes arrive.
A call's session (:class:`~telebridge.providers.tts.http_stream.PCMStreamSession`) reuses the engine's SDK client
(its warm connection pool); stopping a reply closes its open responses, which is how OpenAI learns to stop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from telebridge.providers.context import ProviderContext
from telebridge.providers.openai_common import PROVIDER, OpenAIAccess
from telebridge.providers.tts.http_stream import PCMStreamSession, require_audio, stream_audio, whole_sentence

__all__ = ["OpenAITTS", "create", "OPENAI_PCM_RATE"]

OPENAI_PCM_RATE = 24000
HEALTH = "tts.openai"


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
        return await whole_sentence(self, text)

    def byte_stream(self, text: str) -> AsyncIterator[bytes]:
        """Raw s16le bytes of ``text`` as they arrive; ends when the sentence is complete."""
        cfg = self.cfg

        async def enter(stack: contextlib.AsyncExitStack) -> AsyncIterator[bytes]:
            response = await stack.enter_async_context(
                self.access.client().audio.speech.with_streaming_response.create(
                    model=cfg.model, voice=cfg.voice, input=text, response_format="pcm", speed=cfg.speed))
            require_audio(PROVIDER, response.headers.get("content-type", ""))
            return response.iter_bytes()

        return stream_audio(PROVIDER, enter, first_byte_timeout=self.first_byte_timeout,
                            error=lambda exc: self.access.error(exc, stage="speech request"),
                            health=self.ctx.health, health_name=HEALTH)

    async def aclose(self) -> None:
        await self.access.aclose()


def create(cfg: Any, ctx: ProviderContext) -> OpenAITTS:
    return OpenAITTS(cfg, ctx)
