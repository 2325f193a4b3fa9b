"""Following a placed call to its end: Twilio's call resource (status, duration, answered-by), then — when the
service's API key is set — the service's own record (ended reason, a short transcript) from ``GET /v1/calls``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from pydantic import BaseModel, Field
from twilio.base.exceptions import TwilioException, TwilioRestException

from telebridge.twilio.client import TwilioCredentialsMissing, rest_client

from .calls import PlaceCallError, twilio_error
from .registry import TERMINAL_STATUSES

__all__ = ["CallOutcome", "follow_call"]


class CallOutcome(BaseModel):
    call_sid: str
    status: str
    duration: int | None = None
    answered_by: str | None = None
    ended_reason: str | None = None
    transcript: list[dict[str, str]] = Field(default_factory=list)
    timed_out: bool = False


async def _server_record(settings: Any, call_sid: str) -> dict[str, Any] | None:
    key = getattr(settings, "api_key", None)
    base = getattr(settings, "public_url", None)
    if key is None or not base:
        return None
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            response = await http.get(f"{base}/v1/calls/{call_sid}",
                                      headers={"Authorization": f"Bearer {key.get_secret_value()}"})
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


async def follow_call(settings: Any, call_sid: str, *, poll: float = 1.0, timeout: float = 3600.0,
                      on_status: Any = None) -> CallOutcome:
    """Poll until the call ends (or ``timeout``); raises :class:`PlaceCallError` if Twilio cannot be asked."""
    try:
        client, http = rest_client(settings)
    except TwilioCredentialsMissing as exc:
        raise PlaceCallError(str(exc), kind="credentials") from None
    status, last, call = "queued", None, None
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                call = await client.calls(call_sid).fetch_async()
            except TwilioRestException as exc:
                raise twilio_error(exc, to="", from_="") from None
            except (httpx.HTTPError, OSError, TwilioException) as exc:
                raise PlaceCallError(f"cannot reach Twilio: {type(exc).__name__}: {exc}", kind="network") from None
            status = str(call.status)
            if status != last and on_status is not None:
                on_status(status)
            last = status
            if status in TERMINAL_STATUSES or time.monotonic() >= deadline:
                break
            await asyncio.sleep(poll)
    finally:
        await http.aclose()
    outcome = CallOutcome(
        call_sid=call_sid, status=status, timed_out=status not in TERMINAL_STATUSES,
        duration=int(call.duration) if call is not None and call.duration not in (None, "") else None,
        answered_by=getattr(call, "answered_by", None) if call is not None else None,
    )
    for _ in range(10):  # the service writes its record a moment after the stream closes
        record = await _server_record(settings, call_sid)
        if record is None:
            break
        if record.get("ended_reason") or record.get("transcript"):
            outcome.ended_reason = record.get("ended_reason")
            outcome.transcript = record.get("transcript") or []
            outcome.answered_by = outcome.answered_by or record.get("answered_by")
            break
        await asyncio.sleep(0.3)
    return outcome
