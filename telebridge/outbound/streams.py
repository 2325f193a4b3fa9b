"""What a Media Stream's ``start`` means for the call registry and the agent: the call's ``custom_data`` (with an
outbound call's data taken from where it cannot be forged), the agent that answers, and the record kept once the
call ends.

Where an outbound call's data comes from, in order: the registry (the TwiML request reached this process), else
the stream's ``<Parameter>``s when their ``tb_sig`` MAC verifies (another process of the same service answered
the TwiML request), else nowhere: unverifiable data is dropped with a warning, never handed to the agent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from telebridge.twilio.webhook import CALLER_FIELDS

from .sealing import SIGNATURE_PARAM, parameters_authentic
from .webhooks import AGENT_PARAM, AMD_PARAM

log = logging.getLogger("telebridge.outbound.streams")

__all__ = ["StreamCall", "prepare_stream_call", "finish_stream_call", "transcript_summary"]

_INTERNAL = (SIGNATURE_PARAM, AMD_PARAM, AGENT_PARAM)


@dataclass
class StreamCall:
    custom_data: dict[str, Any]
    agent: Any
    outbound: bool
    amd: bool


def _custom(call_sid: str, stream_sid: str, account_sid: str, fields: dict[str, str], data: dict[str, str]) -> dict:
    out: dict[str, Any] = dict(fields)
    out.setdefault("CallSid", call_sid)
    out.setdefault("AccountSid", account_sid)
    out["StreamSid"] = stream_sid
    out.update(data)
    out["custom_parameters"] = dict(data)
    return out


async def prepare_stream_call(runtime: Any, settings: Any, call_sid: str, stream_sid: str, account_sid: str,
                              params: dict[str, str]) -> StreamCall:
    """Raises :class:`telebridge.agent.AgentLoadError` when the call names an agent that cannot be loaded."""
    fields = {k: v for k, v in params.items() if k in CALLER_FIELDS}
    rest = {k: v for k, v in params.items() if k not in CALLER_FIELDS and k not in _INTERNAL}
    outbound = params.get("Direction", "").startswith("outbound") or SIGNATURE_PARAM in params
    amd, agent_spec = False, None
    registry = runtime.call_registry
    if outbound:
        private = await registry.get_private(call_sid) if call_sid else None
        if private is not None:
            data, amd, agent_spec = dict(private.get("data") or {}), bool(private.get("amd")), private.get("agent")
        elif parameters_authentic(settings, params):
            data, amd, agent_spec = rest, params.get(AMD_PARAM) == "1", params.get(AGENT_PARAM) or None
        else:
            log.warning("call %s: outbound stream parameters are not authentic; ignoring its data", call_sid)
            data = {}
    else:
        data = rest
    custom = _custom(call_sid, stream_sid, account_sid, fields, data)
    if outbound:
        custom["Direction"] = "outbound-api"
        custom["amd"] = amd
    agent = runtime.agent_for(agent_spec)
    if call_sid:
        await registry.update(call_sid, status="in-progress", ran_here=True,
                              direction="outbound-api" if outbound else "inbound", amd=amd or None)
    return StreamCall(custom, agent, outbound, amd)


def transcript_summary(history: list[dict[str, Any]], limit: int = 20, chars: int = 300) -> list[dict[str, str]]:
    rows = []
    for message in history:
        role, content = message.get("role"), message.get("content")
        if role in ("user", "assistant") and isinstance(content, str) and content.strip():
            text = " ".join(content.split())
            rows.append({"role": role, "content": text if len(text) <= chars else text[: chars - 1] + "…"})
    return rows[-limit:]


async def finish_stream_call(runtime: Any, session: Any) -> None:
    call_sid = str(session.custom_data.get("CallSid") or "")
    if not call_sid.startswith("CA"):
        return
    try:
        await runtime.call_registry.update(
            call_sid, ended_reason=session.ended_reason or "hung_up", ran_here=True,
            transcript=transcript_summary(session.history),
            answered_by=getattr(session, "answered_by", None),
        )
    except Exception:  # bookkeeping must never break the call's teardown
        log.exception("call %s: could not update the call registry", call_sid)
