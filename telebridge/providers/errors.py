"""The errors every provider client raises, so the call shell can tell "retry", "fall back" and "bad key" apart.

``ProviderError`` is both an :class:`~telebridge.providers.stt.base.STTError` and a
:class:`~telebridge.providers.tts.base.TTSError`, so code that already handles engine failures handles cloud
failures too. Messages name the provider and, for credentials, the environment variable -- never the key.
A failure may be tagged with its health ``kind`` (:func:`provider_error`), which :func:`error_kind` reports.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from telebridge.providers.stt.base import STTError
from telebridge.providers.tts.base import TTSError

__all__ = ["ProviderError", "ProviderAuthError", "ProviderConfigError", "http_error", "provider_error", "error_kind",
           "request_error", "TIMEOUT_ERRORS", "TRANSPORT_ERRORS"]


class ProviderError(STTError, TTSError):
    """A provider request failed. ``retryable``: a timeout, a dropped connection, 429 or 5xx."""

    def __init__(self, provider: str, message: str, *, retryable: bool = False, status: int | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable
        self.status = status


class ProviderAuthError(ProviderError):
    """The provider refused the credentials (401/403), or none were configured."""

    def __init__(self, provider: str, env_var: str | None, detail: str = "credentials refused") -> None:
        hint = f" (set ${env_var} or pass api_key)" if env_var else ""
        super().__init__(provider, f"{detail}{hint}", retryable=False)
        self.env_var = env_var


class ProviderConfigError(ProviderError):
    """The configuration cannot work with this provider (e.g. an encoding it does not offer)."""


def http_error(provider: str, status: int, body: str = "", *, env_var: str | None = None) -> ProviderError:
    """The right error for an HTTP status (or a WebSocket handshake refused with it)."""
    detail = " ".join(body.split())[:200]
    if status in (401, 403):
        return ProviderAuthError(provider, env_var, f"credentials refused (HTTP {status})")
    retryable = status == 429 or status == 408 or status >= 500
    return ProviderError(provider, f"HTTP {status}{': ' + detail if detail else ''}", retryable=retryable,
                         status=status)


def provider_error(provider: str, message: str, kind: str, *, retryable: bool = False,
                   status: int | None = None) -> ProviderError:
    """A :class:`ProviderError` carrying its health ``kind`` (timeout, disconnected, protocol, ...)."""
    err = ProviderError(provider, message, retryable=retryable, status=status)
    err.kind = kind  # type: ignore[attr-defined]
    return err


def error_kind(exc: BaseException, *, default: str = "error") -> str:
    """The health ``kind`` of a failure: its tag, else what its class or HTTP status says, else ``default``."""
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
    return default


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


def request_error(provider: str, exc: BaseException, stage: str, *,
                  timeouts: tuple[type[BaseException], ...] = TIMEOUT_ERRORS,
                  transports: tuple[type[BaseException], ...] = TRANSPORT_ERRORS) -> ProviderError:
    """A failed request as a :class:`ProviderError` (one already is passes through): a timeout or a lost
    connection is retryable, anything else is a protocol failure."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, timeouts):
        return provider_error(provider, f"{stage} timed out", "timeout", retryable=True)
    if isinstance(exc, transports):
        return provider_error(provider, f"{stage} failed: connection lost ({type(exc).__name__})", "disconnected",
                              retryable=True)
    return provider_error(provider, f"{stage} failed: {type(exc).__name__}", "protocol", retryable=False)
