"""A transfer's details beyond its target: the caller ID the target sees, how long it rings, and the whisper.

Caller ID. Twilio lets ``<Dial callerId>`` be the calling number, the called number, or a number of the account
(or verified with it); anything else is warning 13214 and a failed dial. Left out, Twilio passes on the parent
call's caller, which on inbound calls is the caller's own number, as their carrier sent it (sometimes invalid,
and never attested by us). telebridge therefore defaults to *this call's Twilio number* — ``To`` on inbound calls,
``From`` on outbound calls — which is always allowed; ``transfer_caller_id="caller"`` passes the caller's number
on (so the person taking the transfer sees who is calling), and any other E.164 number is used as given.

Whisper. ``<Number url>`` / ``<Sip url>`` is TwiML Twilio runs on the *answering* side before the two calls are
connected, while the caller keeps hearing the ring. Ours is ``POST /twilio/transfer-whisper?d=<sealed>``: the
text rides in the URL sealed like outbound call data (:mod:`telebridge.outbound.sealing`: not readable in logs,
not forgeable), so any instance behind the load balancer can answer it and nothing is kept per call; the request
itself must carry Twilio's signature like every webhook. A token that does not open (expired, another key)
answers an empty ``<Response/>``: the transfer goes through without the whisper rather than failing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from ..outbound.sealing import SealError, seal, unseal
from .twiml import empty, say
from .webhook import forbidden, signed_form

log = logging.getLogger("telebridge.transfer")

__all__ = ["WHISPER_PATH", "transfer_caller_id", "whisper_link", "transfer_options", "transfer_whisper"]

WHISPER_PATH = "/twilio/transfer-whisper"
_KIND = "transfer-whisper"


def _e164(value: Any) -> str | None:
    text = str(value or "")
    return text if text.startswith("+") and text[1:].isdigit() and 2 <= len(text) <= 16 and text[1] != "0" else None


def transfer_caller_id(config: Any, custom_data: Mapping[str, Any]) -> str | None:
    """The ``<Dial callerId>`` for a transfer of this call (None: leave it to Twilio)."""
    chosen = getattr(config, "transfer_caller_id", None)
    if chosen == "caller":
        outbound = str(custom_data.get("Direction") or "").startswith("outbound")
        return _e164(custom_data.get("To" if outbound else "From"))
    if chosen:
        return str(chosen)
    outbound = str(custom_data.get("Direction") or "").startswith("outbound")
    return _e164(custom_data.get("From" if outbound else "To"))


def whisper_link(settings: Any, endpoint: str | None, text: str | None) -> str | None:
    """The whisper URL (``endpoint`` + the sealed text), or None when there is nothing to say or no way to."""
    if not text or not endpoint:
        if text:
            log.warning("transfer whisper skipped: no public address for %s (set TELEBRIDGE_PUBLIC_URL)", WHISPER_PATH)
        return None
    try:
        token = seal(settings, {"kind": _KIND, "say": text})
    except SealError as exc:
        log.warning("transfer whisper skipped: %s", exc)
        return None
    return f"{endpoint}?d={quote(token, safe='')}"


def transfer_options(
    config: Any, custom_data: Mapping[str, Any], settings: Any, endpoint: str | None
) -> dict[str, Any]:
    """Keyword arguments for ``TwilioCallControl.transfer`` from the session's settings."""
    return {
        "caller_id": transfer_caller_id(config, custom_data),
        "timeout": getattr(config, "transfer_timeout", None),
        "whisper_url": whisper_link(settings, endpoint, getattr(config, "transfer_whisper", None)),
    }


async def transfer_whisper(request: Request) -> Response:
    """Twilio asks what to play to whoever answered a transfer: ``<Say>`` the sealed text."""
    params = await signed_form(request)
    if params is None:
        return forbidden()
    try:
        payload = unseal(request.app.state.settings, request.query_params.get("d", ""))
    except SealError as exc:
        log.warning("transfer whisper for call %s: %s; connecting without it", params.get("ParentCallSid", ""), exc)
        return Response(empty(), media_type="application/xml")
    text = payload.get("say")
    if payload.get("kind") != _KIND or not isinstance(text, str) or not text.strip():
        return Response(empty(), media_type="application/xml")
    log.info("transfer of call %s answered: whispering to %s", params.get("ParentCallSid", ""),
             "the target" if params.get("CallSid") else "?")
    return Response(say(text), media_type="application/xml")
