"""Sealed call data: what an outbound call carries from whoever placed it to the server that answers it.

Why sealed, and why in the URL: ``place_call`` usually runs in another process than the server (``telebridge
call``, a campaign), so the call's ``data`` (and the agent to use) must travel with the call itself. Twilio's only
channel from "create the call" to "the call was answered" is the TwiML ``Url``: Twilio requests it, signed, once
the callee picks up. The data rides there as a Fernet token (AES-128-CBC + HMAC-SHA256, with a timestamp), keyed
from the Twilio auth token (or API key secret) that both ends already share:

* **not forgeable** — nobody without the key can make or alter a token; whoever answers the phone only ever
  sends audio and key presses. The TwiML request is also signed by Twilio (``X-Twilio-Signature``);
* **not readable** — the data (names, account numbers…) never appears in a URL in clear: not in Twilio's request
  logs, not in proxy access logs;
* **not replayable for long** — tokens older than :data:`MAX_AGE` are refused (ringing is at most 10 minutes).

The server then keeps the data in its call registry keyed by CallSid and hands it to the agent itself; the copy
sent back through the stream's ``<Parameter>``s is ignored when the registry has the call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["SealError", "seal", "unseal", "MAX_AGE", "MAX_TOKEN_CHARS", "SIGNATURE_PARAM", "sign_parameters",
           "parameters_authentic"]

MAX_AGE = 3600  # seconds a sealed token stays valid (queued + ringing calls, with room to spare)
MAX_TOKEN_CHARS = 3000  # Twilio accepts URLs up to 4,000 characters; leave room for the base URL
_CONTEXT = b"telebridge outbound call data v1"


class SealError(ValueError):
    """The data cannot be sealed (no key, too large) or a token cannot be opened (forged, expired, wrong key)."""


def _key_material(settings: Any) -> str:
    token = settings.auth_token()
    if token:
        return str(token)
    secret = getattr(settings, "twilio_api_key_secret", None)
    if secret is not None:
        return str(secret.get_secret_value())
    raise SealError("set TWILIO_AUTH_TOKEN (or TWILIO_API_SECRET) to pass data with a call")


def _fernet(settings: Any) -> Fernet:
    digest = hmac.new(_key_material(settings).encode(), _CONTEXT, hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal(settings: Any, payload: dict[str, Any]) -> str:
    """``payload`` (JSON-able) as a URL-safe opaque token."""
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    token = _fernet(settings).encrypt(raw).decode()
    if len(token) > MAX_TOKEN_CHARS:
        raise SealError(f"the call's data is too large ({len(raw)} bytes); keep it under about 2 kB")
    return token


def unseal(settings: Any, token: str, *, max_age: int = MAX_AGE) -> dict[str, Any]:
    try:
        raw = _fernet(settings).decrypt(token.encode(), ttl=max_age)
    except (InvalidToken, ValueError) as exc:
        raise SealError("call data token is invalid, expired or sealed with another key") from exc
    payload = json.loads(raw)
    if not isinstance(payload, dict):
        raise SealError("call data token does not hold an object")
    return payload


# --- the stream's <Parameter>s -----------------------------------------------------------------------------------
# The Media Stream's ``start`` message is not covered by any Twilio signature (the WebSocket upgrade is signed over
# the URL alone), so the parameters an outbound call's data rides in carry their own MAC: ``tb_sig``.
_PARAMS_CONTEXT = b"telebridge stream parameters v1"
SIGNATURE_PARAM = "tb_sig"


def _canonical(params: dict[str, str]) -> bytes:
    items = sorted((k, v) for k, v in params.items() if k != SIGNATURE_PARAM)
    return json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode()


def sign_parameters(settings: Any, params: dict[str, str]) -> str:
    key = hmac.new(_key_material(settings).encode(), _PARAMS_CONTEXT, hashlib.sha256).digest()
    return hmac.new(key, _canonical(params), hashlib.sha256).hexdigest()


def parameters_authentic(settings: Any, params: dict[str, str]) -> bool:
    given = params.get(SIGNATURE_PARAM, "")
    try:
        expected = sign_parameters(settings, params)
    except SealError:
        return False
    return bool(given) and hmac.compare_digest(given, expected)
