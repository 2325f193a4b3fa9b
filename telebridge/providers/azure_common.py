"""What Azure Speech's STT and TTS clients share: the region's endpoints, the key, the credential check, the
HTTP client and the mapping of failures to telebridge's errors and health kinds.

Endpoints (Azure's public ones, per region)::

    https://{region}.stt.speech.microsoft.com     speech to text, REST API for short audio
    https://{region}.tts.speech.microsoft.com     text to speech (cognitiveservices/v1)
    https://{region}.voice.speech.microsoft.com   text to speech with a custom voice (?deploymentId=)
    https://{region}.api.cognitive.microsoft.com  /sts/v1.0/issueToken

A ``base_url`` (or ``TELEBRIDGE_AZURE_SPEECH_BASE_URL``) replaces every one of them with a single origin; paths
stay as Azure documents them.

Authentication: every request carries the resource key in ``Ocp-Apim-Subscription-Key``. Azure documents that
header and ``Authorization: Bearer <token from issueToken>`` as equivalent for both REST APIs; the key header
needs no extra round trip and no token state, and Azure's docs note that bearer tokens are scoped to the host
that issued them while the key header "works with all endpoint formats" (regional, custom sub-domain, or a
proxy behind ``base_url``). ``issueToken`` is still used: it is the cheapest authenticated request Azure offers
(no audio, no billing), so :meth:`AzureClient.check` uses it to validate the key and region when a call starts.
"""

from __future__ import annotations

import asyncio
import functools
import re
from typing import Any

import httpx

from telebridge.providers.checks import CheckCache
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import (
    ProviderAuthError, ProviderConfigError, ProviderError, http_error, provider_error,
)
from telebridge.providers.retry import DEFAULT_POLICY, RetryPolicy, with_retries

__all__ = ["PROVIDER", "KEY_ENV", "REGION_ENV", "AzureEndpoints", "AzureClient", "error_kind", "user_agent"]

PROVIDER = "azure"
KEY_ENV = "AZURE_API_KEY"
REGION_ENV = "AZURE_REGION"
KEY_HEADER = "Ocp-Apim-Subscription-Key"
TOKEN_PATH = "/sts/v1.0/issueToken"

MAX_RETRY_AFTER = 2.0  # Retry-After honoured up to this many seconds (a call is waiting)

_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def user_agent() -> str:
    try:
        from telebridge import __version__
    except ImportError:  # pragma: no cover
        __version__ = "0"
    return f"telebridge/{__version__}"


class AzureEndpoints:
    """The origins to reach for one config (``override``: the base URL replacing all of them)."""

    def __init__(self, region: str | None, override: str | None) -> None:
        self.region = (region or "").strip().lower() or None
        self.override = override.rstrip("/") if override else None

    def problem(self) -> str | None:
        """Why these endpoints cannot be used, or None."""
        if self.override:
            return None
        if not self.region:
            return f"no region: set ${REGION_ENV} or pass region= (or a base_url)"
        if not _REGION.fullmatch(self.region):
            return f"region {self.region!r} is not an Azure region name (e.g. eastus, westeurope)"
        return None

    def _origin(self, service: str) -> str:
        if self.override:
            return self.override
        problem = self.problem()
        if problem:
            raise ProviderConfigError(PROVIDER, problem)
        return f"https://{self.region}.{service}"

    @property
    def stt(self) -> str:
        return self._origin("stt.speech.microsoft.com")

    @property
    def tts(self) -> str:
        return self._origin("tts.speech.microsoft.com")

    @property
    def custom_voice(self) -> str:
        return self._origin("voice.speech.microsoft.com")

    @property
    def token(self) -> str:
        return self._origin("api.cognitive.microsoft.com")


class AzureClient:
    """Key, endpoints, one lazily created ``httpx.AsyncClient`` and the cached credential check.

    ``connect_timeout``, ``first_byte_timeout`` and ``retry_policy`` are plain attributes (tests shorten them).
    """

    def __init__(self, kind: str, cfg: Any, ctx: ProviderContext) -> None:
        self.kind = kind  # "stt" or "tts"
        self.ctx = ctx
        self._key = cfg.api_key.get_secret_value() if cfg.api_key is not None else None
        self.endpoints = AzureEndpoints(cfg.region, ctx.origin(PROVIDER, cfg, ""))
        self.connect_timeout = 5.0
        self.first_byte_timeout = 5.0
        self.retry_policy: RetryPolicy = DEFAULT_POLICY
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None
        self._check = CheckCache()  # a network blip is not remembered as a verdict on the key (the default)

    def __repr__(self) -> str:  # never the key
        where = self.endpoints.override or self.endpoints.region
        return f"<Azure {self.kind} client {where!s}>"

    @property
    def health_name(self) -> str:
        return f"{self.kind}.{PROVIDER}"

    # --- requests -------------------------------------------------------------------------------------------
    def http(self) -> httpx.AsyncClient:
        """The engine's client (created in the running loop; a new loop gets a new client)."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop or self._http.is_closed:
            timeout = httpx.Timeout(connect=self.connect_timeout, read=self.first_byte_timeout,
                                    write=self.connect_timeout, pool=self.connect_timeout)
            self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                           limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=60))
            self._http_loop = loop
        return self._http

    def auth_headers(self) -> dict[str, str]:
        self.require_usable()
        assert self._key is not None
        return {KEY_HEADER: self._key}

    def require_usable(self) -> None:
        """Raise the configuration/credential error that makes every request pointless."""
        if not self._key:
            raise ProviderAuthError(PROVIDER, KEY_ENV, "no API key configured")
        problem = self.endpoints.problem()
        if problem:
            raise ProviderConfigError(PROVIDER, problem)

    def status_error(self, response: httpx.Response, body: bytes) -> ProviderError:
        text = body[:2000].decode("utf-8", "replace")
        return http_error(PROVIDER, response.status_code, text, env_var=KEY_ENV)

    async def pause_for_retry_after(self, response: httpx.Response) -> None:
        """429/503 with ``Retry-After``: wait what Azure asks (capped) before the retry policy's own backoff."""
        if response.status_code not in (429, 503):
            return
        raw = response.headers.get("retry-after", "")
        try:
            delay = float(raw)
        except ValueError:
            return
        if delay > 0:
            await asyncio.sleep(min(delay, MAX_RETRY_AFTER))

    def report(self, exc: BaseException) -> None:
        self.ctx.health.error(self.health_name, error_kind(exc), str(exc))

    # --- credential check -----------------------------------------------------------------------------------
    async def check(self) -> None:
        """POST issueToken with the key: validates key and region without synthesizing or recognizing anything
        (retried like any request on timeouts/429/5xx). Cached: a pass for 5 minutes, a refusal for 30 s."""
        async def probe() -> None:
            try:
                self.require_usable()
                await with_retries(self._issue_token, provider=PROVIDER, policy=self.retry_policy)
            except ProviderError as exc:
                self.report(exc)
                raise

        await self._check.run(probe)

    async def _issue_token(self) -> str:
        headers = self.auth_headers() | {"Content-Type": "application/x-www-form-urlencoded",
                                         "User-Agent": user_agent()}
        url = self.endpoints.token + TOKEN_PATH
        try:
            async with asyncio.timeout(self.connect_timeout + self.first_byte_timeout):
                response = await self.http().post(url, headers=headers, content=b"")
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise ProviderError(PROVIDER, "credential check timed out", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(PROVIDER, f"credential check failed: {type(exc).__name__}", retryable=True) from exc
        if response.status_code != 200:
            raise self.status_error(response, response.content)
        return response.text

    async def aclose(self) -> None:
        client, self._http = self._http, None
        if client is not None:
            await client.aclose()


def error_kind(exc: BaseException) -> str:
    """The health ``kind`` for a failure."""
    if isinstance(exc, ProviderAuthError):
        return "auth"
    if isinstance(exc, ProviderConfigError):
        return "config"
    kind = getattr(exc, "kind", None)
    if kind:
        return str(kind)
    status = getattr(exc, "status", None)
    if status == 429:
        return "rate_limited"
    if status is not None and status >= 500:
        return "server"
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return "timeout"
    return "error"


# failure(message, kind, *, retryable): an Azure ProviderError tagged with its health kind.
failure = functools.partial(provider_error, PROVIDER)
