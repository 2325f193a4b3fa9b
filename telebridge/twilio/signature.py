"""X-Twilio-Signature: compute, validate, and rebuild the URL Twilio signed.

Why this exists: the webhook and the media WebSocket are public endpoints. Without a signature check anyone
could start an agent session (toll fraud, prompt leaks). Twilio signs the exact public URL it called plus the
POST form fields (HMAC-SHA1 with the account auth token, base64); for the WebSocket upgrade it signs the
``wss://`` URL with no params. Behind ngrok or a TLS-terminating proxy the server sees a different scheme, host
or path than Twilio dialled, so the URL has to be rebuilt from configuration (:func:`public_url`) or, failing
that, from X-Forwarded-* headers (:func:`url_from_forwarded`).

The HMAC itself comes from ``twilio.request_validator.RequestValidator``. Validation is done here rather than
with ``RequestValidator.validate`` for two reasons: its "with default port" variant adds ``:80`` to ``wss://``
URLs (it only knows https → 443), which would miss a WebSocket signature made over ``wss://host:443/…``; and
its comparison returns early on a length mismatch, where we use :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from twilio.request_validator import RequestValidator

__all__ = ["compute_signature", "validate_signature", "public_url", "url_from_forwarded"]

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}
_TO_WS = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}
_TO_HTTP = {"wss": "https", "ws": "http", "https": "https", "http": "http"}
_SECURE = {"https", "wss"}


def compute_signature(url: str, params: Mapping[str, str] | None, auth_token: str) -> str:
    """The X-Twilio-Signature Twilio would send for ``url`` and form ``params`` (None/empty for WebSockets).

    ``params`` may also be a multi-dict (Starlette ``FormData``, anything with ``getlist``/``getall``);
    RequestValidator then signs every value of a repeated field, as Twilio does.
    """
    return RequestValidator(auth_token).compute_signature(url, _params(params))


def validate_signature(
    url: str, params: Mapping[str, str] | None, signature: str | None, auth_token: str
) -> bool:
    """True if ``signature`` is Twilio's for ``url`` (with or without its default port) and ``params``.

    Never raises on hostile input: a missing, empty or non-ASCII signature is simply invalid. Every URL variant
    is checked (no early exit) and each comparison is constant-time.
    """
    if not signature or not auth_token:
        return False
    try:
        given = signature.encode("ascii")
    except UnicodeEncodeError:
        return False
    validator = RequestValidator(auth_token)
    form = _params(params)
    ok = False
    for variant in _port_variants(url):
        expected = validator.compute_signature(variant, form).encode("ascii")
        ok |= hmac.compare_digest(expected, given)
    return ok


def _params(params: Mapping[str, str] | None) -> Any:
    # RequestValidator treats a falsy params object as "no params": the WebSocket case.
    return params if params else {}


def _port_variants(url: str) -> list[str]:
    """The URL as given, without its port, and with the scheme's default port (Twilio is inconsistent)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # malformed port: only the literal URL can match
        return [url]
    host = parts.hostname
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if host is None or default is None:
        return [url]
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    host_text = parts.netloc.rpartition("@")[2]
    bare = host_text.rsplit(":", 1)[0] if port is not None else host_text
    variants = [url]
    if port is not None:
        variants.append(urlunsplit(parts._replace(netloc=prefix + bare)))
    else:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{bare}:{default}")))
    return variants


def public_url(base_url: str, path: str, query: str = "", *, websocket: bool = False) -> str:
    """The URL Twilio called, rebuilt from the configured public base URL.

    ``base_url`` is what Twilio is configured with, e.g. ``https://abc.ngrok.app`` or, behind a proxy that
    mounts the app under a prefix, ``https://x.com/tb``. ``path`` is the request path as the app routes it
    (relative to that prefix) and ``query`` the raw query string, kept byte-for-byte because Twilio signs it
    as sent. ``websocket=True`` gives the ``wss://``/``ws://`` URL Twilio dialled for the media stream.
    """
    base = _parse_base(base_url)
    scheme = (_TO_WS if websocket else _TO_HTTP)[base.scheme]
    full_path = base.path.rstrip("/") + "/" + path.lstrip("/")
    return urlunsplit((scheme, base.netloc, full_path, query, ""))


def _parse_base(base_url: str) -> SplitResult:
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"public base URL must be http(s):// or ws(s)://, got {base_url!r}")
    if not parts.hostname:
        raise ValueError(f"public base URL has no host: {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"public base URL must not have a query or fragment: {base_url!r}")
    return parts._replace(scheme=scheme)


def url_from_forwarded(
    headers: Mapping[str, str],
    scheme: str,
    host: str,
    path: str,
    query: str = "",
    websocket: bool = False,
) -> str:
    """Rebuild the public URL from the request when no public base URL is configured.

    Honours ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` (first value of a comma-separated list: the one
    the outermost proxy saw from Twilio). ``scheme``/``host`` are what the server saw locally (``ws``/``http``
    behind a TLS-terminating proxy, which X-Forwarded-Proto ``https`` upgrades to ``wss``/``https``).

    Only use this behind a proxy you trust to overwrite these headers; a configured base URL is safer. (A
    forged header cannot forge a signature, but it lets a signature made for another URL be replayed here.)
    """
    proto = _first(_header(headers, "x-forwarded-proto"))
    fwd_host = _first(_header(headers, "x-forwarded-host"))
    seen = (proto or scheme).lower()
    if seen not in _DEFAULT_PORTS:
        seen = scheme.lower()
    if seen not in _DEFAULT_PORTS:
        raise ValueError(f"unsupported scheme {scheme!r}")
    secure = seen in _SECURE
    if websocket:
        out_scheme = "wss" if secure else "ws"
    else:
        out_scheme = "https" if secure else "http"
    netloc = fwd_host or host
    if not netloc:
        raise ValueError("no host to build the public URL from")
    return urlunsplit((out_scheme, netloc, "/" + path.lstrip("/"), query, ""))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for Starlette Headers and for plain dicts."""
    value = headers.get(name)
    if value is None:
        for key, val in headers.items():
            if key.lower() == name:
                return val
    return value


def _first(value: str | None) -> str | None:
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None
