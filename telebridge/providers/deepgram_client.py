"""The I/O both Deepgram clients share: authenticated HTTP requests, the WebSocket handshake, and the cached
credential check -- each mapping Deepgram's failures to :mod:`telebridge.providers.errors` (the key travels in the
``Authorization`` header only, never in a URL, a log line or an error message).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx  # noqa: F401  -- imported here so the registry reports the client unavailable without it
import websockets.asyncio.client  # noqa: F401

from telebridge.providers.deepgram_protocol import CHECK_PATH, ENV_VAR, PROVIDER, auth_headers
from telebridge.providers.errors import ProviderAuthError, ProviderError, http_error
from telebridge.providers.retry import with_retries
from telebridge.providers.sockets import CLOSE_TIMEOUT

__all__ = ["require_key", "health_kind", "http_request", "ws_connect", "check_credentials"]

# The WebSocket library logs handshake headers (the Authorization header too) at DEBUG: its logger stays at INFO.
_wire_log = logging.getLogger("telebridge.providers.deepgram.wire")
_wire_log.setLevel(logging.INFO)


def require_key(engine: Any) -> str:
    if not engine._key:
        raise ProviderAuthError(PROVIDER, ENV_VAR, "no API key configured")
    return engine._key


def health_kind(exc: BaseException) -> str:
    if isinstance(exc, ProviderAuthError):
        return "auth"
    status = getattr(exc, "status", None)
    if status == 429:
        return "rate_limited"
    if status and status >= 500:
        return "server"
    if "timed out" in str(exc) or isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    return "disconnected" if getattr(exc, "retryable", False) else "error"


def _http_client(engine: Any) -> Any:
    import httpx

    if engine._client is None:
        engine._client = httpx.AsyncClient(timeout=httpx.Timeout(engine.request_timeout,
                                                                 connect=engine.connect_timeout))
    return engine._client


async def http_request(engine: Any, method: str, path: str, **kwargs: Any) -> Any:
    """One authenticated request to ``engine.origin``; HTTP errors mapped by :func:`http_error`."""
    import httpx

    headers = {**kwargs.pop("headers", {}), **auth_headers(require_key(engine))}
    try:
        response = await _http_client(engine).request(method, engine.origin + path, headers=headers, **kwargs)
    except httpx.TimeoutException as exc:
        raise ProviderError(PROVIDER, f"{method} {path} timed out", retryable=True) from exc
    except httpx.TransportError as exc:
        raise ProviderError(PROVIDER, f"{method} {path}: {type(exc).__name__}", retryable=True) from exc
    if response.status_code >= 400:
        raise http_error(PROVIDER, response.status_code, _error_text(response.text), env_var=ENV_VAR)
    return response


def _error_text(body: str) -> str:
    """Deepgram's ``{"err_code", "err_msg"}`` (or ``category``/``message``) as one short line."""
    try:
        data = json.loads(body)
        parts = [data.get("err_code") or data.get("category"), data.get("err_msg") or data.get("message")]
        return ": ".join(str(p) for p in parts if p)
    except (ValueError, AttributeError):
        return body


async def ws_connect(engine: Any, url: str) -> Any:
    """Open a Deepgram WebSocket with the key in the ``Authorization`` header (never in the URL)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    headers = auth_headers(require_key(engine))
    try:
        return await connect(url, additional_headers=headers, open_timeout=engine.connect_timeout,
                             max_size=None, ping_interval=20, ping_timeout=20, close_timeout=CLOSE_TIMEOUT,
                             logger=_wire_log, compression=None)
    except InvalidStatus as exc:
        response = exc.response
        body = response.body.decode("utf-8", "replace") if response.body else response.headers.get("dg-error", "")
        raise http_error(PROVIDER, response.status_code, _error_text(body), env_var=ENV_VAR) from None
    except (asyncio.TimeoutError, TimeoutError) as exc:
        raise ProviderError(PROVIDER, "connect timed out", retryable=True) from exc
    except (OSError, InvalidHandshake) as exc:
        raise ProviderError(PROVIDER, f"connect failed: {type(exc).__name__}", retryable=True) from exc


async def check_credentials(engine: Any, health_name: str) -> None:
    """A cached (``engine._check``: a :class:`~telebridge.providers.checks.CheckCache`) authenticated
    ``GET /v1/projects``."""
    async def probe() -> None:
        try:
            await with_retries(lambda: http_request(engine, "GET", CHECK_PATH), provider=PROVIDER)
        except ProviderError as exc:
            engine.health.error(health_name, health_kind(exc), str(exc))
            raise
        engine.health.ok(health_name)

    await engine._check.run(probe)
