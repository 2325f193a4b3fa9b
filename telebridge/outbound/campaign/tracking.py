"""Following a placed call to its end: poll Twilio's call resource (``GET …/Calls/{sid}.json``) until a final
status (``completed``, ``busy``, ``no-answer``, ``failed``, ``canceled``).

When the service's own API is available (``TELEBRIDGE_API_KEY`` set, at ``TELEBRIDGE_PUBLIC_URL``), its
``GET /v1/calls/{sid}`` adds what Twilio does not know — why the call ended (``hung_up``, the agent's
``end_call`` reason, ``voicemail``…), and a one-line summary of its short transcript — once the call is over.
That enrichment is best-effort: any failure leaves those fields empty.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from pydantic import BaseModel

from telebridge.twilio.client import rest_client

from ..errors import explain, is_twilio_failure
from .scheduler import FINAL_STATUSES

log = logging.getLogger("telebridge.campaign")

__all__ = ["CallOutcome", "RestTracker"]


class CallOutcome(BaseModel):
    status: str  # Twilio's final status, or telebridge's invalid / error / unknown
    duration: int | None = None
    answered_by: str | None = None
    ended_reason: str | None = None
    summary: str | None = None


_REASONS = {"busy": "callee busy", "no-answer": "no answer", "failed": "call failed", "canceled": "canceled"}


class RestTracker:
    """``await tracker(call_sid)`` → the call's :class:`CallOutcome`. One REST client for every call."""

    def __init__(self, settings: Any, *, poll_interval: float = 2.0, max_errors: int = 10,
                 api_transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.poll_interval = poll_interval
        self.max_errors = max_errors
        self._client, self._http = rest_client(settings)
        self._api: httpx.AsyncClient | None = None
        api_key = getattr(settings, "api_key", None)
        if api_key is not None and settings.public_url:
            self._api = httpx.AsyncClient(base_url=settings.public_url, timeout=5.0, transport=api_transport,
                                          headers={"Authorization": f"Bearer {api_key.get_secret_value()}"})

    async def __call__(self, call_sid: str) -> CallOutcome:
        resource = self._client.api.v2010.accounts(self.settings.twilio_account_sid).calls(call_sid)
        errors = 0
        while True:
            try:
                call = await resource.fetch_async()
                errors = 0
            except Exception as exc:
                if not is_twilio_failure(exc):
                    raise
                errors += 1
                log.warning("call %s: cannot fetch its status (%d/%d): %s", call_sid, errors, self.max_errors,
                            explain(exc))
                if errors >= self.max_errors:
                    return CallOutcome(status="unknown", ended_reason=f"lost track of the call: {explain(exc)}")
            else:
                status = str(call.status or "")
                if status in FINAL_STATUSES:
                    outcome = CallOutcome(status=status, duration=int(call.duration) if call.duration else None,
                                          answered_by=call.answered_by or None, ended_reason=_REASONS.get(status))
                    return await self._enrich(call_sid, outcome)
            await asyncio.sleep(self.poll_interval)

    async def _enrich(self, call_sid: str, outcome: CallOutcome) -> CallOutcome:
        if self._api is None:
            return outcome
        try:
            response = await self._api.get(f"/v1/calls/{call_sid}")
            body = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return outcome
        if not isinstance(body, dict):
            return outcome
        update = {k: body[k] for k in ("ended_reason", "summary", "answered_by")
                  if isinstance(body.get(k), str) and body[k]}
        if "summary" not in update and isinstance(body.get("transcript"), list):
            update["summary"] = summarize(body["transcript"])
        return outcome.model_copy(update=update)

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._api is not None:
            await self._api.aclose()


def summarize(transcript: list[Any], limit: int = 300) -> str:
    """``[{"role", "content"}, …]`` (the server's short transcript) as one line: ``agent: Hi! | callee: Hello?``."""
    names = {"assistant": "agent", "user": "callee"}
    parts = [f"{names.get(t.get('role'), t.get('role'))}: {t.get('content', '')}" for t in transcript
             if isinstance(t, dict) and t.get("content")]
    text = " | ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"
