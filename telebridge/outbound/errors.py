"""One clear line for every way a Twilio REST request can fail (the CLI never shows a traceback for these)."""

from __future__ import annotations

import json

import httpx
from twilio.base.exceptions import TwilioException, TwilioRestException

from telebridge.twilio.client import TwilioCredentialsMissing

__all__ = ["AUTH_FAILED", "explain", "is_twilio_failure"]

AUTH_FAILED = 20003  # "Authenticate": wrong account SID, token, or API key

_HINTS = {
    AUTH_FAILED: "Twilio rejected the credentials: check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN "
    "(or TWILIO_API_KEY / TWILIO_API_SECRET)",
    20404: "Twilio has no such resource on this account",
    21211: "Twilio says the 'To' number is invalid",
    21212: "Twilio says the 'From' number is invalid (it must be a number or verified caller ID of the account)",
    21502: "Twilio refused the URL (it must be a valid, publicly reachable http(s) URL)",
}


def is_twilio_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a REST failure :func:`explain` describes (as opposed to a bug)."""
    return isinstance(exc, (TwilioException, TwilioCredentialsMissing, httpx.HTTPError, OSError))


def _as_rest_exception(exc: TwilioException) -> TwilioRestException | None:
    """The SDK raises a bare ``TwilioException("Unable to fetch page", response)`` for list pages: recover the
    status and Twilio's error code from the response it carries."""
    response = exc.args[1] if len(exc.args) > 1 else None
    status = getattr(response, "status_code", None)
    if status is None:
        return None
    try:
        body = json.loads(getattr(response, "text", "") or "{}")
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    return TwilioRestException(status, "", msg=body.get("message") or str(exc.args[0]), code=body.get("code"))


def explain(exc: BaseException) -> str:
    """``exc`` as one line, with Twilio's error code when there is one; never includes secrets."""
    if isinstance(exc, TwilioException) and not isinstance(exc, TwilioRestException):
        exc = _as_rest_exception(exc) or exc
    if isinstance(exc, TwilioRestException):
        hint = _HINTS.get(exc.code or 0)
        detail = (exc.msg or "").strip().splitlines()[0] if exc.msg else ""
        code = f"error {exc.code}" if exc.code else f"HTTP {exc.status}"
        if hint:
            return f"{hint} ({code}: {detail})" if detail else f"{hint} ({code})"
        return f"Twilio refused the request ({code}: {detail})"
    if isinstance(exc, TwilioCredentialsMissing):
        return f"no Twilio credentials: {exc}"
    if isinstance(exc, httpx.HTTPError):
        target = ""
        try:
            target = f" {exc.request.url.scheme}://{exc.request.url.host}"
        except RuntimeError:  # no request attached
            pass
        return f"cannot reach Twilio's API{target}: {type(exc).__name__}: {exc}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"
