"""Twilio's requests about outbound calls: the TwiML ``Url`` once the callee answers, the call's status
callbacks, and the asynchronous AMD verdict. All three are signature-checked like every webhook.

``POST /twilio/outbound?d=<sealed>`` opens the sealed call data (:mod:`.sealing`), keeps it in the registry keyed
by CallSid, and answers ``<Connect><Stream>`` whose ``<Parameter>``s carry Twilio's outbound fields
(``Direction=outbound-api``, ``To``, ``From``, …), the data, and ``tb_sig``: a MAC over all of them, so a
forged ``start`` message cannot smuggle data in (see :mod:`telebridge.outbound.streams`).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from telebridge.logs import mask_number
from telebridge.twilio.twiml import connect_stream, hang_up, say_and_hangup
from telebridge.twilio.webhook import (
    CALLER_FIELDS,
    MEDIA_PATH,
    STATUS_PATH,
    STREAM_ENDED_PATH,
    external_url,
    forbidden,
    signed_form,
)

from .registry import TERMINAL_STATUSES
from .sealing import SIGNATURE_PARAM, SealError, sign_parameters, unseal

log = logging.getLogger("telebridge.outbound.webhooks")

__all__ = ["outbound_twiml", "call_status", "amd_status", "AMD_PARAM", "AGENT_PARAM"]

AMD_PARAM = "tb_amd"
AGENT_PARAM = "tb_agent"
BUSY = "Sorry, all our lines are busy right now. We'll try again later."


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


async def outbound_twiml(request: Request) -> Response:
    settings = request.app.state.settings
    params = await signed_form(request)
    if params is None:
        return forbidden()
    runtime = request.app.state.runtime
    call_sid = params.get("CallSid", "")
    try:
        payload = unseal(settings, request.query_params.get("d", ""))
    except SealError as exc:
        log.warning("outbound call %s: refusing its TwiML request: %s", call_sid, exc)
        return Response(hang_up(), media_type="application/xml")
    data: dict[str, str] = {str(k): str(v) for k, v in (payload.get("data") or {}).items()}
    amd = bool(payload.get("amd"))
    agent = payload.get("agent")
    registry = runtime.call_registry
    await registry.set_private(call_sid, {"data": data, "amd": amd, "agent": agent})
    await registry.update(call_sid, direction="outbound-api", status=params.get("CallStatus") or "in-progress",
                          to=mask_number(params.get("To")), **{"from": mask_number(params.get("From"))}, amd=amd)
    if not runtime.accepting:
        log.warning("outbound call %s answered while %s", call_sid, "draining" if runtime.draining else "full")
        return Response(say_and_hangup(BUSY), media_type="application/xml")
    parameters: dict[str, str] = {k: params[k] for k in CALLER_FIELDS if params.get(k)}
    parameters["Direction"] = params.get("Direction") or "outbound-api"
    parameters.update(data)
    if amd:
        parameters[AMD_PARAM] = "1"
    if agent:
        parameters[AGENT_PARAM] = str(agent)
    parameters[SIGNATURE_PARAM] = sign_parameters(settings, parameters)
    stream_url = external_url(request, settings, MEDIA_PATH, websocket=True)
    twiml = connect_stream(stream_url, parameters, status_callback=external_url(request, settings, STATUS_PATH),
                           allow_insecure=stream_url.startswith("ws://"),
                           action=external_url(request, settings, STREAM_ENDED_PATH))
    log.info("outbound call %s to %s answered: connecting the media stream", call_sid, mask_number(params.get("To")))
    return Response(twiml, media_type="application/xml")


async def call_status(request: Request) -> Response:
    """Twilio's call progress events (initiated, ringing, answered = in-progress, completed / busy / …)."""
    params = await signed_form(request)
    if params is None:
        return forbidden()
    runtime = request.app.state.runtime
    call_sid = params.get("CallSid", "")
    status = params.get("CallStatus", "")
    fields: dict[str, Any] = {
        "status": status or None,
        "direction": params.get("Direction") or None,
        "to": mask_number(params.get("To")) or None,
        "from": mask_number(params.get("From")) or None,
        "duration": _int(params.get("CallDuration")),
        "answered_by": params.get("AnsweredBy") or None,
    }
    record = await runtime.call_registry.get(call_sid)
    if status in TERMINAL_STATUSES and (record is None or record.ended_reason is None):
        fields["ended_reason"] = status if status != "completed" else "hung_up"
    await runtime.call_registry.update(call_sid, **fields)
    log.info("call %s: status %s", call_sid, status)
    return Response(status_code=204)


async def amd_status(request: Request) -> Response:
    """``AsyncAmdStatusCallback``: ``AnsweredBy`` (human, machine_end_beep, machine_end_silence, …, fax, unknown)
    reaches the live call, whose agent decides what to do."""
    params = await signed_form(request)
    if params is None:
        return forbidden()
    runtime = request.app.state.runtime
    call_sid = params.get("CallSid", "")
    verdict = params.get("AnsweredBy", "unknown") or "unknown"
    await runtime.call_registry.update(call_sid, answered_by=verdict,
                                       machine_detection_duration_ms=_int(params.get("MachineDetectionDuration")))
    session = runtime.calls.get(call_sid)
    if session is not None and hasattr(session, "on_answered_by"):
        session.on_answered_by(verdict, source="twilio")
    elif session is None:
        await runtime.state.deliver_amd(call_sid, verdict)  # the call may run on another worker or instance
    log.info("call %s: answered by %s", call_sid, verdict)
    return Response(status_code=204)
