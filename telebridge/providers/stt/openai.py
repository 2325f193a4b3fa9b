"""OpenAI transcription (``STT.OpenAI``) through the official async SDK, plus the OpenAI plumbing that the speech
client (:mod:`telebridge.providers.tts.openai`) shares: base URL, one lazily created ``AsyncOpenAI`` per engine,
the cached credential check and the mapping of SDK/httpx failures onto :mod:`telebridge.providers.errors`.

Each utterance is one ``POST /v1/audio/transcriptions`` (multipart, a 16 kHz 16-bit WAV). ``whisper-1`` answers
``verbose_json`` (segments carry ``avg_logprob`` / ``no_speech_prob``); the ``gpt-4o-*-transcribe`` models only
offer ``json``, so they answer text alone. The SDK's own retries are off (``max_retries=0``): telebridge's
:func:`~telebridge.providers.retry.with_retries` decides, so every provider follows one policy.

Endpoint: ``cfg.base_url`` (an origin) or ``$OPENAI_BASE_URL`` (the SDK's convention: it already ends in ``/v1``)
or ``https://api.openai.com``; the SDK gets ``<origin>/v1``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import numpy as np

from telebridge.audio.wav import wav_bytes
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import ProviderAuthError, ProviderError, http_error
from telebridge.providers.retry import with_retries
from telebridge.providers.stt.base import STT_SAMPLE_RATE, STTError, Transcript

__all__ = ["TIMEOUT_ERRORS", "TRANSPORT_ERRORS", "CheckCache", "OpenAIAccess", "OpenAISTT", "create", "error_kind", "provider_error", "sdk_base_url"]

log = logging.getLogger("telebridge.providers.openai")

PROVIDER = "openai"
ENV_VAR = "OPENAI_API_KEY"
PUBLIC_ORIGIN = "https://api.openai.com"
CHECK_OK_TTL = 300.0
CHECK_FAIL_TTL = 30.0
# Models that answer verbose_json (segment log-probabilities); the gpt-4o transcribers only offer json/text.
VERBOSE_MODELS = ("whisper-1",)


def _http_error_classes() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """Timeout and transport exception classes of httpx and of the httpx fork newer ``openai`` SDKs use
    (``httpx2``): the SDK raises the latter while a streamed body is read."""
    modules: list[Any] = [httpx]
    try:
        import httpx2

        modules.append(httpx2)
    except ImportError:
        pass
    timeouts = tuple(m.TimeoutException for m in modules) + (asyncio.TimeoutError, TimeoutError)
    transports = tuple(m.TransportError for m in modules) + (OSError,)
    return timeouts, transports


TIMEOUT_ERRORS, TRANSPORT_ERRORS = _http_error_classes()


def sdk_base_url(origin: str) -> str:
    """``OPENAI_BASE_URL`` already ends in ``/v1`` (the SDK's convention); an origin does not."""
    origin = origin.rstrip("/")
    return origin if origin.endswith("/v1") else origin + "/v1"


def provider_error(provider: str, message: str, kind: str, *, retryable: bool) -> ProviderError:
    """A :class:`ProviderError` carrying its health ``kind`` (timeout, disconnected, protocol, ...)."""
    err = ProviderError(provider, message, retryable=retryable)
    err.kind = kind  # type: ignore[attr-defined]
    return err


def error_kind(exc: BaseException) -> str:
    """The health ``kind`` of a failure."""
    kind = getattr(exc, "kind", None)
    if kind:
        return str(kind)
    if isinstance(exc, ProviderAuthError):
        return "auth"
    if isinstance(exc, ProviderError) and exc.status:
        if exc.status == 429:
            return "rate_limited"
        return "server" if exc.status >= 500 else "protocol"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    return "error"


class CheckCache:
    """A credential check's outcome, remembered for ``CHECK_OK_TTL`` (success) or ``CHECK_FAIL_TTL`` (failure)."""

    def __init__(self) -> None:
        self._until = 0.0
        self._error: BaseException | None = None
        self._lock = asyncio.Lock()

    async def run(self, probe: Any) -> None:
        async with self._lock:
            now = time.monotonic()
            if now < self._until:
                if self._error is not None:
                    raise self._error
                return
            try:
                await probe()
            except asyncio.CancelledError:
                raise
            except ProviderError as exc:
                self._error, self._until = exc, time.monotonic() + CHECK_FAIL_TTL
                raise
            self._error, self._until = None, time.monotonic() + CHECK_OK_TTL


class OpenAIAccess:
    """One engine's way to OpenAI: key, base URL, the SDK client (created inside the running loop), the cached
    check (``GET /v1/models``) and error mapping."""

    def __init__(self, cfg: Any, ctx: ProviderContext, *, health_name: str, read_timeout: float,
                 connect_timeout: float) -> None:
        self.ctx = ctx
        self.health_name = health_name
        self.base_url = sdk_base_url(ctx.origin(PROVIDER, cfg, PUBLIC_ORIGIN))
        self._key = cfg.api_key.get_secret_value() if getattr(cfg, "api_key", None) is not None else None
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._check = CheckCache()

    def __repr__(self) -> str:
        return f"OpenAIAccess(base_url={self.base_url!r})"

    def client(self) -> Any:
        if not self._key:
            raise ProviderAuthError(PROVIDER, ENV_VAR, "no API key configured")
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            from openai import AsyncOpenAI, Timeout

            self._client = AsyncOpenAI(api_key=self._key, base_url=self.base_url, max_retries=0,
                                       timeout=Timeout(self.read_timeout, connect=self.connect_timeout))
            self._loop = loop
        return self._client

    async def check(self) -> None:
        async def probe() -> None:
            try:
                client = self.client()
                async with asyncio.timeout(self.read_timeout):
                    await client.models.list()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise self.failed(exc) from None
            self.ctx.health.ok(self.health_name)

        await self._check.run(probe)

    def error(self, exc: BaseException, *, stage: str = "request") -> ProviderError:
        """An SDK/httpx failure as a :class:`ProviderError` (never echoing the key)."""
        import openai

        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, openai.APIStatusError):
            try:
                body = exc.response.text
            except Exception:  # a streamed body that was not read
                body = ""
            return http_error(PROVIDER, exc.status_code, body, env_var=ENV_VAR)
        if isinstance(exc, (openai.APITimeoutError, *TIMEOUT_ERRORS)):
            return provider_error(PROVIDER, f"{stage} timed out", "timeout", retryable=True)
        if isinstance(exc, (openai.APIConnectionError, *TRANSPORT_ERRORS)):
            return provider_error(PROVIDER, f"{stage} failed: connection lost ({type(exc).__name__})",
                                  "disconnected", retryable=True)
        return provider_error(PROVIDER, f"{stage} failed: {type(exc).__name__}", "protocol", retryable=False)

    def failed(self, exc: BaseException, *, stage: str = "request") -> ProviderError:
        """Map ``exc`` and report it to the health counters."""
        err = self.error(exc, stage=stage)
        self.ctx.health.error(self.health_name, error_kind(err), str(err))
        return err

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.close()


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
