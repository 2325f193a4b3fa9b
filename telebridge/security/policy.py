"""Which door each path is behind, and the request facts access decisions use (client, origin, credentials).

Policies:

- ``twilio``: ``/twilio/*``. Never key-checked, never altered: each route checks Twilio's signature itself, and
  an API key does not stand in for one.
- ``open``: ``/healthz`` and anything outside ``/v1/`` that is not listed below.
- ``read``: ``GET /v1/voices``, ``GET /v1/health``: open unless ``TELEBRIDGE_PROTECT_READS`` makes them
  ``protected``.
- ``protected``: ``WS /v1/realtime`` (which also takes session tokens), ``POST /v1/voices`` (an upload),
  and any other ``/v1/`` path (deny by default). A key is required when any is configured; with none
  configured, loopback clients only.
- ``console``: ``/console`` and ``/metrics``. ``TELEBRIDGE_CONSOLE_TOKEN`` or an API key as a bearer credential,
  or (``/console`` only) the console's login cookie; with neither configured, loopback clients only. The page
  itself, its files and the login (``page``) need no credential once one is configured: they hold no data.
- ``key_only``: ``/v1/calls``, ``/v1/realtime/sessions``. Off (404) with no key configured, else a key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import Headers

TOKEN_SUBPROTOCOLS = ("telebridge-token.", "openai-insecure-api-key.")
SECRET_QUERY_PARAMS = frozenset({"token", "api_key", "key"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


@dataclass(frozen=True)
class Policy:
    kind: str  # twilio | open | read | protected | key_only
    tokens: bool = False  # realtime session tokens are accepted
    upload: bool = False  # counted against uploads per hour; the route caps its own body
    page: bool = False  # console: the page, its files and the login, served without a credential once one is set
    cookie: bool = False  # console: the login cookie stands in for the bearer credential


TWILIO = Policy("twilio")
OPEN = Policy("open")
READ = Policy("read")
PROTECTED = Policy("protected")
KEY_ONLY = Policy("key_only")
REALTIME = Policy("protected", tokens=True)
UPLOAD = Policy("protected", upload=True)
CONSOLE = Policy("console", cookie=True)
CONSOLE_PAGE = Policy("console", page=True, cookie=True)
METRICS = Policy("console")
_CONSOLE_PAGES = ("/console", "/console/phone")
_CONSOLE_LOGIN = ("/console/login", "/console/logout")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def policy_for(path: str, method: str) -> Policy:
    """``method`` is the HTTP method, or ``WEBSOCKET``."""
    p = path.rstrip("/") or "/"
    if _under(p, "/twilio"):
        return TWILIO
    if p == "/v1/realtime":
        return REALTIME
    if p == "/v1/realtime/sessions" or _under(p, "/v1/calls"):
        return KEY_ONLY
    if p == "/v1/voices":
        return UPLOAD if method == "POST" else READ
    if p == "/v1/health":
        return READ
    if _under(p, "/console"):
        page = (method in ("GET", "HEAD") and (p in _CONSOLE_PAGES or _under(p, "/console/static"))) or (
            method == "POST" and p in _CONSOLE_LOGIN)
        return CONSOLE_PAGE if page else CONSOLE
    if _under(p, "/metrics"):
        return METRICS
    if _under(p, "/v1"):
        return PROTECTED
    return OPEN


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


# Any forwarding header: the loopback-only default is for direct connections. A local proxy that is not (or not
# correctly) set up as trusted, or that sends only X-Forwarded-Proto/-Host or X-Real-IP (which uvicorn ignores),
# would otherwise make every remote client look like 127.0.0.1.
PROXY_EVIDENCE = ("forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip")


def relayed(headers: Headers) -> bool:
    return any(name in headers for name in PROXY_EVIDENCE)


def bearer(headers: Headers) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def take_ws_token(scope: dict) -> str | None:
    """Remove a session token from a WebSocket scope's subprotocols and query string, returning it.

    The scope is changed in place: the app (and uvicorn's log lines, which read the same scope) never see it.
    """
    token: str | None = None
    offered = list(scope.get("subprotocols") or [])
    kept = []
    for proto in offered:
        prefix = next((p for p in TOKEN_SUBPROTOCOLS if proto.startswith(p)), None)
        if prefix is None:
            kept.append(proto)
        elif token is None:
            token = proto[len(prefix):]
    if len(kept) != len(offered):
        scope["subprotocols"] = kept
    query = scrub_query(scope)
    return token if token is not None else query.get("token")


def scrub_query(scope: dict) -> dict[str, str]:
    """Drop secret-looking query parameters from the scope (in place); return the ones dropped."""
    raw = scope.get("query_string") or b""
    if not raw:
        return {}
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    secret = {k: v for k, v in pairs if k.lower() in SECRET_QUERY_PARAMS}
    if secret:
        scope["query_string"] = urlencode([(k, v) for k, v in pairs if k.lower() not in SECRET_QUERY_PARAMS]).encode()
    return {k.lower(): v for k, v in secret.items()}


def _origin_of(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}" if parts.scheme and parts.netloc else url.strip().lower()


def parse_origins(value: str) -> tuple[frozenset[str], bool]:
    """``TELEBRIDGE_ALLOWED_ORIGINS``: the listed origins, and whether ``*`` (any origin) is among them."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    return frozenset(_origin_of(item) for item in items if item != "*"), "*" in items


def origin_allowed(origin: str, *, host: str | None, public_url: str | None, allowed: frozenset[str],
                   any_origin: bool = False) -> bool:
    """Same-origin (the request's ``Host`` or ``TELEBRIDGE_PUBLIC_URL``), a loopback page, or listed."""
    if any_origin:
        return True
    normalized = _origin_of(origin)
    if normalized in allowed:
        return True
    parts = urlsplit(normalized)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (sandboxed frames, file:// pages) and the like: only when listed
    if host and parts.netloc == host.strip().lower():
        return True
    if public_url and normalized == _origin_of(public_url):
        return True
    name = (parts.hostname or "").lower()
    return name in LOOPBACK_NAMES or name.endswith(".localhost") or is_loopback(name)
