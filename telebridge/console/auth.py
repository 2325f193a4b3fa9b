"""Who may use the console: ``TELEBRIDGE_CONSOLE_TOKEN`` or an API key, as a bearer credential or a login cookie.

Scripts send ``Authorization: Bearer <token or key>``. A browser enters it once in the page's login form
(``POST /console/login``); the answer sets a cookie holding a *signed session*, never the credential itself:
``v1.<label>.<expires>.<nonce>.<mac>``, where ``label`` says which credential logged in (``console``, ``key1``…),
``expires`` is Unix seconds, and ``mac`` is an HMAC-SHA256 over the rest keyed from every configured credential.
So a session works on every worker process of the service (nothing is stored), cannot be forged or stretched
without a credential, and stops working when any credential is changed or removed (that is how to log everyone
out). The cookie is HttpOnly, SameSite=Strict, limited to ``/console`` and Secure when the page came over https.

Sans-I/O: the time comes from the caller. The access decision itself (which paths, loopback-only when nothing is
configured) is :meth:`telebridge.security.guard.Guard.check`'s; this module only matches and signs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Any

from starlette.requests import cookie_parser

if TYPE_CHECKING:
    from ..security.keys import KeyRing

__all__ = ["COOKIE", "CONSOLE_LABEL", "ConsoleAuth"]

COOKIE = "telebridge_console"
COOKIE_PATH = "/console"
CONSOLE_LABEL = "console"
_CONTEXT = b"telebridge console session v1"
MAX_COOKIE = 256


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class ConsoleAuth:
    def __init__(self, token: str | None, keys: KeyRing, raw_keys: list[str], session_seconds: float) -> None:
        self._token = hashlib.sha256(token.encode()).digest() if token else None
        self.keys = keys
        self.session_seconds = session_seconds
        material = [token or ""] + sorted(k.strip() for k in raw_keys if k.strip())
        self._secret = hmac.new(_CONTEXT, "\0".join(material).encode(), hashlib.sha256).digest()

    @classmethod
    def from_settings(cls, settings: Any, keys: KeyRing) -> ConsoleAuth:
        token = settings.console_token.get_secret_value().strip() if settings.console_token is not None else None
        raw: list[str] = []
        if settings.api_key is not None:
            raw.append(settings.api_key.get_secret_value())
        if settings.api_keys is not None:
            raw.extend(settings.api_keys.get_secret_value().split(","))
        return cls(token or None, keys, raw, settings.console_session_hours * 3600)

    @property
    def configured(self) -> bool:
        """A console token or an API key is set: the console needs one (else it is loopback-only)."""
        return self._token is not None or bool(self.keys)

    def match(self, presented: str) -> str | None:
        """``console`` for the console token, an API key's label (``key1``…), or None. Constant time."""
        digest = hashlib.sha256(presented.encode("utf-8", "replace")).digest()
        found = self.keys.match(presented)
        if self._token is not None and hmac.compare_digest(digest, self._token):
            found = CONSOLE_LABEL
        return found

    # --- the login cookie -----------------------------------------------------------------------------------
    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())

    def issue(self, label: str, now: float) -> str:
        body = f"v1.{label}.{int(now + self.session_seconds)}.{_b64(secrets.token_bytes(12))}"
        return f"{body}.{self._mac(body)}"

    def verify(self, value: str, now: float) -> str | None:
        """The label of a valid, unexpired session, else None."""
        if not self.configured or not value or len(value) > MAX_COOKIE:
            return None
        body, _, mac = value.rpartition(".")
        parts = body.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not parts[2].isdigit():
            return None
        if not hmac.compare_digest(self._mac(body), mac):
            return None
        return parts[1] if now < int(parts[2]) else None

    @staticmethod
    def cookie_of(cookie_header: str | None) -> str | None:
        if not cookie_header:
            return None
        return cookie_parser(cookie_header).get(COOKIE) or None

    def set_cookie(self, response: Any, value: str, *, secure: bool) -> None:
        response.set_cookie(COOKIE, value, max_age=int(self.session_seconds), path=COOKIE_PATH, httponly=True,
                            samesite="strict", secure=secure)

    @staticmethod
    def clear_cookie(response: Any, *, secure: bool) -> None:
        response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure)
