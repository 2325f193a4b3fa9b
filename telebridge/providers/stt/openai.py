"""OpenAI transcription (``STT.OpenAI``) through the official async SDK (plumbing shared with the speech client:
:mod:`telebridge.providers.openai_common`).

Each utterance is one ``POST /v1/audio/transcriptions`` (multipart, a 16 kHz 16-bit WAV). ``whisper-1`` answers
``verbose_json`` (segments carry ``avg_logprob`` / ``no_speech_prob``); the ``gpt-4o-*-transcribe`` models only
offer ``json``, so they answer text alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from telebridge.audio.wav import wav_bytes
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import ProviderError, error_kind
from telebridge.providers.openai_common import PROVIDER, OpenAIAccess, sdk_base_url
from telebridge.providers.retry import with_retries
from telebridge.providers.stt.base import STT_SAMPLE_RATE, STTError, Transcript

__all__ = ["OpenAISTT", "create", "sdk_base_url"]

log = logging.getLogger("telebridge.providers.openai")

# Models that answer verbose_json (segment log-probabilities); the gpt-4o transcribers only offer json/text.
VERBOSE_MODELS = ("whisper-1",)


def _language(code: str | None) -> str | None:
    """OpenAI wants ISO-639-1 (``en``); Jay configs sometimes carry a locale (``en-US``)."""
    if not code:
        return None
    return code.split("-")[0].split("_")[0].lower() or None


class OpenAISTT:
    """``STT.OpenAI``: one transcription request per utterance."""

    def __init__(self, cfg: Any, ctx: ProviderContext) -> None:
        self.cfg = cfg
        self.model = cfg.model
        self.language = _language(cfg.language)
        self.access = OpenAIAccess(cfg, ctx, health_name="stt.openai", read_timeout=15.0, connect_timeout=5.0)

    def __repr__(self) -> str:
        return f"OpenAISTT(model={self.model!r}, base_url={self.access.base_url!r})"

    @property
    def response_format(self) -> str:
        return "verbose_json" if self.model in VERBOSE_MODELS else "json"

    async def check(self) -> None:
        await self.access.check()

    async def transcribe(self, audio: np.ndarray, *, language: str | None = None) -> Transcript:
        x = np.asarray(audio)
        if x.dtype.kind != "f" or x.ndim != 1:
            raise STTError(f"expected float32 mono audio, got {x.dtype} {x.shape}")
        lang = _language(language) or self.language
        duration = x.shape[0] / STT_SAMPLE_RATE
        if x.size == 0:
            return Transcript(text="", language=lang, duration=0.0)
        wav = wav_bytes(np.clip(x, -1.0, 1.0), STT_SAMPLE_RATE)
        fmt = self.response_format

        async def attempt() -> Any:
            try:
                client = self.access.client()
                kwargs: dict[str, Any] = {"model": self.model, "file": ("utterance.wav", wav, "audio/wav"),
                                          "response_format": fmt}
                if lang:
                    kwargs["language"] = lang
                return await client.audio.transcriptions.create(**kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise self.access.error(exc) from None

        try:
            result = await with_retries(attempt, provider=PROVIDER)
        except ProviderError as exc:
            self.access.ctx.health.error("stt.openai", error_kind(exc), str(exc))
            raise
        self.access.ctx.health.ok("stt.openai")
        return _transcript(result, lang, duration)

    async def aclose(self) -> None:
        await self.access.aclose()


def _transcript(result: Any, lang: str | None, duration: float) -> Transcript:
    text = str(getattr(result, "text", "") or "").strip()
    segments = getattr(result, "segments", None) or []
    logprobs = [float(s.avg_logprob) for s in segments if getattr(s, "avg_logprob", None) is not None]
    no_speech = [float(s.no_speech_prob) for s in segments if getattr(s, "no_speech_prob", None) is not None]
    language = getattr(result, "language", None) or lang
    return Transcript(
        text=text,
        language=_language(language) if language and len(language) <= 5 else lang,
        duration=float(getattr(result, "duration", None) or duration),
        avg_logprob=float(np.mean(logprobs)) if logprobs else None,
        no_speech_prob=max(no_speech) if no_speech else None,
    )


def create(cfg: Any, ctx: ProviderContext) -> OpenAISTT:
    return OpenAISTT(cfg, ctx)
