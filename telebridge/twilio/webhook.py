"""HTTP webhooks Twilio calls: the inbound-call webhook and the stream status callback."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from ..logs import mask_number
from .signature import public_url, url_from_forwarded, validate_signature
from .twiml import connect_stream, hang_up, say_and_hangup

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger("telebridge.webhook")

MEDIA_PATH = "/twilio/media"
STREAM_ENDED_PATH = "/twilio/stream-ended"
# Said when a stream ends abnormally (the agent could not start, the server failed) rather than by a hang-up.
APOLOGY = "Sorry, we're having trouble connecting your call. Please try again later."
STATUS_PATH = "/twilio/stream-status"

# The webhook's caller fields that reach configure_session as custom_data (under Twilio's own names).
CALLER_FIELDS = (
    "From", "To", "CallSid", "AccountSid", "Direction", "CallerName", "ForwardedFrom",
    "FromCity", "FromState", "FromZip", "FromCountry", "ToCity", "ToState", "ToZip", "ToCountry",
)


def request_url(conn: HTTPConnection, settings: Settings, *, websocket: bool = False) -> str:
    """The URL Twilio used to reach us, as it signed it."""
    query = conn.url.query
    if settings.public_url:
        return public_url(settings.public_url, conn.url.path, query, websocket=websocket)
    return url_from_forwarded(conn.headers, conn.url.scheme, conn.headers.get("host", ""), conn.url.path, query, websocket)


def external_url(conn: HTTPConnection, settings: Settings, path: str, *, websocket: bool = False) -> str:
    """An address of ours as Twilio must dial it (from the public base URL, or the request's own host)."""
    if settings.public_url:
        return public_url(settings.public_url, path, "", websocket=websocket)
    return url_from_forwarded(conn.headers, conn.url.scheme, conn.headers.get("host", ""), path, "", websocket)


def signature_ok(conn: HTTPConnection, settings: Settings, params: dict[str, str], *, websocket: bool = False) -> bool:
    if not settings.signatures_enforced:
        return True
    signature = conn.headers.get("x-twilio-signature", "")
    token = settings.auth_token()
    return bool(signature and token) and validate_signature(request_url(conn, settings, websocket=websocket), params, signature, token)


def forbidden() -> Response:
    return Response("invalid Twilio signature", status_code=403, media_type="text/plain")


async def signed_form(request: Request) -> dict[str, str] | None:
    """The webhook's form fields, or None (logged) when the request is not signed by Twilio."""
    form = await request.form()
    params = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    if not signature_ok(request, request.app.state.settings, params):
        log.warning("rejected %s: bad or missing X-Twilio-Signature", request.url.path)
        return None
    return params


async def voice_webhook(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    params = await signed_form(request)
    if params is None:
        return forbidden()
    runtime = request.app.state.runtime
    call_sid = params.get("CallSid", "")
    if not runtime.accepting:
        log.warning("refusing call %s: %s", call_sid, "draining" if runtime.draining else "at capacity")
        return Response(say_and_hangup("Sorry, all our lines are busy right now. Please call back in a few minutes."),
                        media_type="application/xml")
    stream_url = external_url(request, settings, MEDIA_PATH, websocket=True)
    status_url = external_url(request, settings, STATUS_PATH)
    action_url = external_url(request, settings, STREAM_ENDED_PATH)
    parameters = {k: params[k] for k in CALLER_FIELDS if params.get(k)}
    twiml = connect_stream(stream_url, parameters, status_callback=status_url,
                           allow_insecure=stream_url.startswith("ws://"), action=action_url)
    await runtime.call_registry.update(call_sid, direction=params.get("Direction") or "inbound",
                                       status=params.get("CallStatus") or "ringing", to=mask_number(params.get("To")),
                                       **{"from": mask_number(params.get("From"))})
    log.info("call %s from %s: answering with a media stream", call_sid, mask_number(params.get("From")))
    return Response(twiml, media_type="application/xml")


async def stream_status(request: Request) -> Response:
    params = await signed_form(request)
    if params is None:
        return forbidden()
    event = params.get("StreamEvent", "")
    level = logging.WARNING if event == "stream-error" else logging.INFO
    log.log(level, "call %s stream %s: %s %s", params.get("CallSid", ""), params.get("StreamSid", ""), event,
            params.get("StreamError", ""))
    return Response(status_code=204)


async def stream_ended(request: Request) -> Response:
    """Twilio asks what to do once our stream has closed (``<Connect action>``): hang up, or apologise first."""
    params = await signed_form(request)
    if params is None:
        return forbidden()
    outcome = await request.app.state.runtime.stream_outcomes.fetch(params.get("CallSid", ""))  # any worker's
    if outcome == "completed":
        return Response(hang_up(), media_type="application/xml")
    log.warning("call %s: stream ended abnormally (%s); apologising to the caller", params.get("CallSid", ""),
                outcome or "unknown")
    return Response(say_and_hangup(APOLOGY), media_type="application/xml")
