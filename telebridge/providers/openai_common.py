"""The OpenAI plumbing the transcription (:mod:`telebridge.providers.stt.openai`) and speech
(:mod:`telebridge.providers.tts.openai`) clients share: base URL, one lazily created ``AsyncOpenAI`` per engine,
the cached credential check and the mapping of SDK/httpx failures onto :mod:`telebridge.providers.errors`.

The SDK's own retries are off (``max_retries=0``): telebridge's :func:`~telebridge.providers.retry.with_retries`
decides, so every provider follows one policy.

Endpoint: ``cfg.base_url`` (an origin) or ``$OPENAI_BASE_URL`` (the SDK's convention: it already ends in ``/v1``)
or ``https://api.openai.com``; the SDK gets ``<origin>/v1``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from telebridge.providers.checks import CheckCache
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import (
    TIMEOUT_ERRORS, TRANSPORT_ERRORS, ProviderAuthError, ProviderError, error_kind, http_error, request_error,
)
from telebridge.providers.per_loop import PerLoop

__all__ = ["PROVIDER", "ENV_VAR", "PUBLIC_ORIGIN", "OpenAIAccess", "sdk_base_url"]

PROVIDER = "openai"
ENV_VAR = "OPENAI_API_KEY"
PUBLIC_ORIGIN = "https://api.openai.com"


def sdk_base_url(origin: str) -> str:
    """``OPENAI_BASE_URL`` already ends in ``/v1`` (the SDK's convention); an origin does not."""
    origin = origin.rstrip("/")
    return origin if origin.endswith("/v1") else origin + "/v1"


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
        self._clients: PerLoop[Any] = PerLoop(self._make_client)
        self._check = CheckCache()

    def __repr__(self) -> str:
        return f"OpenAIAccess(base_url={self.base_url!r})"

    def client(self) -> Any:
        if not self._key:
            raise ProviderAuthError(PROVIDER, ENV_VAR, "no API key configured")
        return self._clients.get()

    def _make_client(self) -> Any:
        from openai import AsyncOpenAI, Timeout

        return AsyncOpenAI(api_key=self._key, base_url=self.base_url, max_retries=0,
                           timeout=Timeout(self.read_timeout, connect=self.connect_timeout))

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
        return request_error(PROVIDER, exc, stage, timeouts=(openai.APITimeoutError, *TIMEOUT_ERRORS),
                             transports=(openai.APIConnectionError, *TRANSPORT_ERRORS))

    def failed(self, exc: BaseException, *, stage: str = "request") -> ProviderError:
        """Map ``exc`` and report it to the health counters."""
        err = self.error(exc, stage=stage)
        self.ctx.health.error(self.health_name, error_kind(err), str(err))
        return err

    async def aclose(self) -> None:
        client = self._clients.take()
        if client is not None:
            await client.close()
