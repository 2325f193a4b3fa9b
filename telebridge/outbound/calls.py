"""Placing an outbound call: :func:`place_call`, used by ``telebridge call``, ``POST /v1/calls`` and campaigns.

The call is created through the ``twilio`` SDK (``Calls.create``) with:

* ``Url`` — ``{TELEBRIDGE_PUBLIC_URL}/twilio/outbound?d=<sealed>``: once the callee answers, Twilio requests it
  (signed) and the server answers ``<Connect><Stream>``. The call's ``data`` and agent ride in the sealed token
  (see :mod:`telebridge.outbound.sealing` for why there, and why sealed);
* ``StatusCallback`` — ``/twilio/call-status`` with every event (initiated, ringing, answered, completed), so
  the server's call registry follows the call;
* with ``amd=True``: ``MachineDetection=DetectMessageEnd``, ``AsyncAmd=true`` and ``AsyncAmdStatusCallback``
  ``/twilio/amd-status`` (signed by Twilio like every callback): the call connects at once and the verdict
  arrives while the agent is already listening.

Every failure is a :class:`PlaceCallError` whose ``str`` is one line a person can act on.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field
from twilio.base.exceptions import TwilioException, TwilioRestException

from telebridge.logs import mask_number
from telebridge.twilio.client import TwilioCredentialsMissing, rest_client

from .phone import InvalidNumber, e164
from .sealing import SealError, seal

log = logging.getLogger("telebridge.outbound")

__all__ = [
    "PlacedCall", "PlaceCallError", "place_call", "RESERVED_DATA_KEYS",
    "OUTBOUND_TWIML_PATH", "CALL_STATUS_PATH", "AMD_STATUS_PATH", "STATUS_EVENTS",
]

OUTBOUND_TWIML_PATH = "/twilio/outbound"
CALL_STATUS_PATH = "/twilio/call-status"
AMD_STATUS_PATH = "/twilio/amd-status"
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]

# custom_data keys telebridge fills itself: a data key may not shadow them.
RESERVED_DATA_KEYS = frozenset({
    "From", "To", "CallSid", "AccountSid", "Direction", "CallerName", "ForwardedFrom", "FromCity", "FromState",
    "FromZip", "FromCountry", "ToCity", "ToState", "ToZip", "ToCountry", "StreamSid", "custom_parameters",
    "AnsweredBy", "MachineDetectionDuration", "amd",
})

# Twilio error codes → what to do about them (https://www.twilio.com/docs/api/errors).
_TWILIO_ERRORS: dict[int, tuple[str, str]] = {
    20003: ("credentials", "Twilio rejected the credentials (20003): check TWILIO_ACCOUNT_SID and "
                           "TWILIO_AUTH_TOKEN (or TWILIO_API_KEY/TWILIO_API_SECRET)"),
    20404: ("credentials", "Twilio does not know this account (20404): check TWILIO_ACCOUNT_SID"),
    20429: ("rate_limited", "Twilio is rate-limiting this account (20429): place calls more slowly"),
    21210: ("invalid_from", "the From number {from_} is not a verified caller ID or a number of this account "
                            "(21210)"),
    21211: ("invalid_to", "Twilio says the To number {to} is invalid (21211)"),
    21212: ("invalid_from", "Twilio says the From number {from_} is invalid (21212): use a number of this "
                            "account or a verified caller ID"),
    21213: ("invalid_from", "a From number is required (21213)"),
    21214: ("invalid_to", "the To number {to} cannot be reached (21214)"),
    21215: ("permission", "this account may not call {to}: enable the country in Voice geographic permissions "
                          "(21215)"),
    21216: ("permission", "calls to {to} are blocked (21216)"),
    21217: ("invalid_to", "the To number {to} is not a valid phone number (21217)"),
    21219: ("permission", "trial accounts may only call verified numbers; {to} is not verified (21219)"),
    21401: ("invalid_to", "the To number {to} is not a valid phone number (21401)"),
    13223: ("invalid_to", "the To number {to} is not in a valid format (13223)"),
    13224: ("invalid_to", "the To number {to} is not a valid phone number (13224)"),
}

ErrorKind = Literal["invalid_number", "invalid_to", "invalid_from", "credentials", "permission", "rate_limited",
                    "config", "network", "twilio"]


class PlaceCallError(Exception):
    """Placing a call failed. ``str(exc)`` is one line; ``kind`` and ``code`` (Twilio's) say which failure."""

    def __init__(self, message: str, *, kind: ErrorKind | str = "twilio", code: int | None = None,
                 status: int | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.kind = kind
        self.code = code
        self.status = status


class PlacedCall(BaseModel):
    """A call Twilio accepted. Numbers are masked: this object ends up in logs and API responses."""

    model_config = ConfigDict(populate_by_name=True)

    call_sid: str
    status: str = Field(description="Twilio's status when created: usually 'queued'")
    to: str = Field(description="the callee, masked (+*******0123)")
    from_: str = Field(alias="from", description="the caller ID, masked")
    account_sid: str | None = None
    direction: str = "outbound-api"
    amd: bool = False
    agent: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


def _check_data(data: dict[str, str] | None) -> dict[str, str]:
    if not data:
        return {}
    clean: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key.strip():
            raise PlaceCallError("data keys must be non-empty strings", kind="config")
        if key in RESERVED_DATA_KEYS:
            raise PlaceCallError(f"data key {key!r} is reserved (telebridge fills it in itself)", kind="config")
        if not isinstance(value, str):
            raise PlaceCallError(f"data value for {key!r} must be a string", kind="config")
        clean[key] = value
    return clean


def _public_base(settings: Any) -> str:
    base = getattr(settings, "public_url", None)
    if not base:
        raise PlaceCallError("TELEBRIDGE_PUBLIC_URL is not set: Twilio needs the https:// address of this "
                             "service to connect the call", kind="config")
    return str(base).rstrip("/")


def twilio_error(exc: TwilioRestException, *, to: str, from_: str) -> PlaceCallError:
    """Twilio's error as one actionable line."""
    known = _TWILIO_ERRORS.get(int(exc.code)) if exc.code is not None else None
    if known is not None:
        kind, template = known
        return PlaceCallError(template.format(to=mask_number(to), from_=mask_number(from_)), kind=kind,
                              code=exc.code, status=exc.status)
    if exc.status == 401:
        return PlaceCallError(f"Twilio rejected the credentials (HTTP 401{f', code {exc.code}' if exc.code else ''})",
                              kind="credentials", code=exc.code, status=exc.status)
    detail = " ".join(str(exc.msg or "").split())[:200]
    return PlaceCallError(f"Twilio refused the call (HTTP {exc.status}, code {exc.code}): {detail}", kind="twilio",
                          code=exc.code, status=exc.status)


async def place_call(
    settings: Any,
    *,
    to: str,
    from_: str,
    data: dict[str, str] | None = None,
    amd: bool = False,
    agent: str | None = None,
) -> PlacedCall:
    """Dial ``to`` from ``from_``; the server at ``TELEBRIDGE_PUBLIC_URL`` runs the agent once answered.

    ``data`` reaches the agent's ``configure_session`` as ``custom_data`` (every key at top level and under
    ``custom_parameters``, next to Twilio's ``To``, ``From``, ``CallSid``, ``Direction: "outbound-api"``).
    ``agent`` (``path/to/agent.py`` or ``module:attr``, as the server would load it) replaces the server's agent
    for this call. Raises :class:`PlaceCallError` for every failure.
    """
    try:
        to_n, from_n = e164(to), e164(from_)
    except InvalidNumber as exc:
        raise PlaceCallError(str(exc), kind="invalid_number") from None
    clean = _check_data(data)
    base = _public_base(settings)
    payload: dict[str, Any] = {"data": clean, "amd": bool(amd)}
    if agent:
        payload["agent"] = agent
    try:
        token = seal(settings, payload)
    except SealError as exc:
        raise PlaceCallError(str(exc), kind="config") from None
    options: dict[str, Any] = {
        "url": f"{base}{OUTBOUND_TWIML_PATH}?d={quote(token, safe='')}",
        "method": "POST",
        "status_callback": f"{base}{CALL_STATUS_PATH}",
        "status_callback_event": STATUS_EVENTS,
        "status_callback_method": "POST",
    }
    if amd:
        options.update(machine_detection="DetectMessageEnd", async_amd="true",
                       async_amd_status_callback=f"{base}{AMD_STATUS_PATH}", async_amd_status_callback_method="POST")
    try:
        client, http = rest_client(settings)
    except TwilioCredentialsMissing as exc:
        raise PlaceCallError(str(exc), kind="credentials") from None
    try:
        call = await client.calls.create_async(to=to_n, from_=from_n, **options)
    except TwilioRestException as exc:
        err = twilio_error(exc, to=to_n, from_=from_n)
        log.info("placing a call to %s failed: %s", mask_number(to_n), err)
        raise err from None
    except (httpx.HTTPError, OSError) as exc:
        where = getattr(settings, "twilio_api_base_url", None) or "api.twilio.com"
        raise PlaceCallError(f"cannot reach Twilio at {where}: {type(exc).__name__}: {exc}".rstrip(": "),
                             kind="network") from None
    except TwilioException as exc:
        raise PlaceCallError(f"Twilio client error: {exc}", kind="twilio") from None
    finally:
        await http.aclose()
    placed = PlacedCall(call_sid=call.sid, status=str(call.status or "queued"), to=mask_number(to_n),
                        from_=mask_number(from_n), account_sid=call.account_sid, amd=bool(amd), agent=agent)
    log.info("placed call %s to %s (amd=%s)", placed.call_sid, placed.to, amd)
    return placed
