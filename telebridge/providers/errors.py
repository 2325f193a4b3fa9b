"""The errors every provider client raises, so the call shell can tell "retry", "fall back" and "bad key" apart.

``ProviderError`` is both an :class:`~telebridge.providers.stt.base.STTError` and a
:class:`~telebridge.providers.tts.base.TTSError`, so code that already handles engine failures handles cloud
failures too. Messages name the provider and, for credentials, the environment variable -- never the key.
"""

from __future__ import annotations

from telebridge.providers.stt.base import STTError
from telebridge.providers.tts.base import TTSError

__all__ = ["ProviderError", "ProviderAuthError", "ProviderConfigError", "http_error"]


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
