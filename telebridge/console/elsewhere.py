"""Calls in progress on the other workers and instances sharing Redis (``REDIS_URL``), for the console.

Each worker's console follows the calls it runs itself (their transcripts, latency, meters). The calls running
elsewhere are listed from the shared call registry (:mod:`telebridge.state.calls`): who, which way, since when,
on which instance -- and a phone call can be hung up from any instance, since that goes through Twilio's REST
API with the call's SID, not through the process running it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from ..twilio.rest import TwilioCallControl
from .service import ActionError

log = logging.getLogger("telebridge.console")

__all__ = ["calls_elsewhere", "hang_up_elsewhere", "ACTIVE"]

ACTIVE = frozenset({"queued", "initiated", "ringing", "in-progress", "answered"})
LIST_LIMIT = 200


def _running_elsewhere(record: Any, runtime: Any) -> bool:
    return (record.status in ACTIVE and record.ended_at is None and record.ended_reason is None
            and record.call_sid not in runtime.calls and record.instance not in (None, runtime.state.instance))


def _summary(record: Any) -> dict[str, Any]:
    since = record.answered_at or record.created_at
    return {
        "id": record.call_sid, "instance": record.instance, "status": record.status,
        "direction": "outbound" if str(record.direction).startswith("outbound") else "inbound",
        "number": record.to if str(record.direction).startswith("outbound") else record.from_,  # masked already
        "since": since.replace(tzinfo=since.tzinfo or timezone.utc).timestamp() if isinstance(since, datetime) else None,
    }


async def calls_elsewhere(runtime: Any) -> list[dict[str, Any]]:
    """The calls other instances are running now (empty without Redis, or while it is unreachable)."""
    if not runtime.state.shared:
        return []
    try:
        records = await runtime.call_registry.list(LIST_LIMIT)
    except Exception:  # Redis away: the console still shows this instance's own calls
        log.debug("console: cannot list other instances' calls", exc_info=True)
        return []
    return [_summary(r) for r in records if _running_elsewhere(r, runtime)]


async def hang_up_elsewhere(runtime: Any, call_sid: str) -> None:
    """Hang up a phone call another instance runs, through Twilio's REST API. Raises :class:`ActionError`."""
    record = await runtime.call_registry.get(call_sid) if runtime.state.shared else None
    if record is None or not _running_elsewhere(record, runtime):
        raise ActionError(404, "not_live", "there is no live call with that id (it may have ended)")
    control = TwilioCallControl.from_settings(runtime.settings, call_sid, None)
    if control is None:
        raise ActionError(409, "no_call_control", "this call runs on another instance and can only be hung up "
                          "through Twilio's REST API: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
    log.info("call %s (on instance %s): hang-up requested from the console", call_sid, record.instance)
    try:
        if not await control.hang_up():
            raise ActionError(502, "hangup_failed", "Twilio refused the hang-up (see the server log)")
    finally:
        await control.aclose()
    await runtime.call_registry.update(call_sid, ended_reason="console_hangup")
