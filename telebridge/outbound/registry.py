"""The call registry: one record per call (placed here, placed elsewhere, inbound), fed by every path that learns
something about a call — ``place_call`` through ``POST /v1/calls``, Twilio's status and AMD callbacks, the
webhooks and the media stream — and read by ``GET /v1/calls/{sid}``.

In-process and bounded (the oldest records are forgotten past ``limit``). The interface is async and keyed by
CallSid so a shared store (Redis: a hash per call plus a TTL) can replace :class:`MemoryCallRegistry` when
several processes serve one number. Private per-call data (the call's ``data``, its agent) is kept apart from
the public record and never returned by the API.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CallRecord", "CallRegistry", "MemoryCallRegistry", "TERMINAL_STATUSES"]

TERMINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
# Twilio's callbacks may arrive out of order: a status never goes back to an earlier one.
_RANK = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3, **{s: 4 for s in TERMINAL_STATUSES}}


def _now() -> datetime:
    return datetime.now(timezone.utc)


class CallRecord(BaseModel):
    """What ``GET /v1/calls/{sid}`` returns. Numbers are masked."""

    model_config = ConfigDict(populate_by_name=True)

    call_sid: str
    direction: str = "outbound-api"
    status: str = "queued"
    to: str | None = None
    from_: str | None = Field(default=None, alias="from")
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration: int | None = Field(default=None, description="seconds, Twilio's CallDuration")
    answered_by: str | None = Field(default=None, description="Twilio AMD verdict, or 'machine_end_beep' from "
                                    "telebridge's own beep detector")
    machine_detection_duration_ms: int | None = None
    amd: bool = False
    ended_reason: str | None = Field(default=None, description="why the call ended: the agent's reason (end_call, "
                                     "voicemail, silence, max_duration, …), hung_up, or Twilio's final status")
    ran_here: bool = Field(default=False, description="the conversation ran in this process")
    transcript: list[dict[str, str]] = Field(default_factory=list, description="who said what (short)")
    history: list[dict[str, Any]] = Field(default_factory=list, description="status changes: {status, at}")


class CallRegistry(Protocol):
    async def update(self, call_sid: str, **fields: Any) -> CallRecord: ...

    async def get(self, call_sid: str) -> CallRecord | None: ...

    async def set_private(self, call_sid: str, data: dict[str, Any]) -> None: ...

    async def get_private(self, call_sid: str) -> dict[str, Any] | None: ...


class MemoryCallRegistry:
    """:class:`CallRegistry` in a bounded ordered dict (one process)."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._records: OrderedDict[str, CallRecord] = OrderedDict()
        self._private: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = asyncio.Lock()

    def _trim(self, store: OrderedDict) -> None:  # type: ignore[type-arg]
        while len(store) > self.limit:
            store.popitem(last=False)

    async def update(self, call_sid: str, **fields: Any) -> CallRecord:
        """Create or update a record. ``status`` only moves forward; ``None`` values never erase."""
        async with self._lock:
            record = self._records.get(call_sid) or CallRecord(call_sid=call_sid)
            changes = {k: v for k, v in fields.items() if v is not None}
            status = changes.pop("status", None)
            now = _now()
            if status and _RANK.get(status, 3) >= _RANK.get(record.status, 0) and status != record.status:
                if record.status not in TERMINAL_STATUSES:
                    changes["status"] = status
                    changes["history"] = [*record.history, {"status": status, "at": now.isoformat()}]
                    if status == "in-progress" and record.answered_at is None:
                        changes.setdefault("answered_at", now)
                    if status in TERMINAL_STATUSES:
                        changes.setdefault("ended_at", now)
            if "from" in changes:
                changes["from_"] = changes.pop("from")
            record = record.model_copy(update={**changes, "updated_at": now})
            self._records[call_sid] = record
            self._records.move_to_end(call_sid)
            self._trim(self._records)
            return record

    async def get(self, call_sid: str) -> CallRecord | None:
        return self._records.get(call_sid)

    async def set_private(self, call_sid: str, data: dict[str, Any]) -> None:
        self._private[call_sid] = data
        self._private.move_to_end(call_sid)
        self._trim(self._private)

    async def get_private(self, call_sid: str) -> dict[str, Any] | None:
        return self._private.get(call_sid)
