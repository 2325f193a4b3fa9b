"""The call registry: one record per call (placed here, placed elsewhere, inbound), fed by every path that learns
something about a call — ``place_call`` through ``POST /v1/calls``, Twilio's status and AMD callbacks, the
webhooks and the media stream — and read by ``GET /v1/calls/{sid}``.

:class:`MemoryCallRegistry` is in-process and bounded (the oldest records are forgotten past ``limit``). With
``REDIS_URL`` set, :class:`telebridge.state.calls.RedisCallRegistry` (a hash per call plus a TTL) replaces it, so
every worker and instance serving one number sees every call. Both merge updates with :func:`merge_record`.
Private per-call data (the call's ``data``, its agent) is kept apart from the public record and never returned
by the API.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CallRecord", "CallRegistry", "MemoryCallRegistry", "TERMINAL_STATUSES", "merge_record"]

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
    instance: str | None = Field(default=None, description="which instance (worker process) ran the conversation "
                                 "(TELEBRIDGE_INSTANCE_ID)")
    transcript: list[dict[str, str]] = Field(default_factory=list, description="who said what (short)")
    history: list[dict[str, Any]] = Field(default_factory=list, description="status changes: {status, at}")


def merge_record(record: CallRecord | None, call_sid: str, fields: dict[str, Any], now: datetime | None = None
                 ) -> CallRecord:
    """``record`` (or a new one) updated with ``fields``: ``status`` only moves forward (Twilio's callbacks may
    arrive out of order) and is appended to ``history``; ``None`` values never erase."""
    now = now or _now()
    record = record or CallRecord(call_sid=call_sid)
    changes = {k: v for k, v in fields.items() if v is not None}
    status = changes.pop("status", None)
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
    return record.model_copy(update={**changes, "updated_at": now})


class CallRegistry(Protocol):
    async def update(self, call_sid: str, **fields: Any) -> CallRecord: ...

    async def get(self, call_sid: str) -> CallRecord | None: ...

    async def list(self, limit: int = 50) -> list[CallRecord]: ...

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
            record = merge_record(self._records.get(call_sid), call_sid, fields)
            self.put(record)
            return record

    def put(self, record: CallRecord) -> None:
        """Keep ``record`` as it is (a copy of the shared store's, for when that store is unreachable)."""
        self._records[record.call_sid] = record
        self._records.move_to_end(record.call_sid)
        self._trim(self._records)

    async def get(self, call_sid: str) -> CallRecord | None:
        return self._records.get(call_sid)

    async def list(self, limit: int = 50) -> list[CallRecord]:
        """The most recently created calls first."""
        return sorted(self._records.values(), key=lambda r: r.created_at, reverse=True)[:limit]

    async def set_private(self, call_sid: str, data: dict[str, Any]) -> None:
        self._private[call_sid] = data
        self._private.move_to_end(call_sid)
        self._trim(self._private)

    async def get_private(self, call_sid: str) -> dict[str, Any] | None:
        return self._private.get(call_sid)
