"""The recordings index: which recordings exist, of which session, and which instance holds the file.

A recording's file stays on the disk of the instance that wrote it (``TELEBRIDGE_RECORDINGS_DIR``); the index
says where it is, so ``GET /v1/recordings`` on any instance lists every instance's recordings. An entry appears
when a recording starts (consent given), is completed when it ends, and disappears when consent is withdrawn
(the file is deleted then).

:class:`SessionRecording <telebridge.recording.SessionRecording>` calls the index synchronously from the event
loop; the Redis index writes in the background (never delaying a conversation) and keeps what it could not write
for when Redis is back. Layout: ``<prefix>:recordings`` (a sorted set of entry ids by start time) and
``<prefix>:recordings:entries`` (a hash, entry id → JSON).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Protocol

from pydantic import BaseModel

from .redis_client import RedisLink

__all__ = ["RecordingEntry", "RecordingsIndex", "MemoryRecordingsIndex", "RedisRecordingsIndex"]


class RecordingEntry(BaseModel):
    id: str
    session_id: str
    file: str
    instance: str
    transport: str | None = None
    call_sid: str | None = None
    agent: str | None = None
    started_at: datetime
    ended_at: datetime | None = None
    lines: int = 0


def entry_for(recording: Any, instance: str, *, ended: bool = False) -> RecordingEntry | None:
    path = getattr(recording, "path", None)
    if path is None:
        return None
    meta = recording.metadata
    started = getattr(recording, "_started", 0.0) or time.time()
    return RecordingEntry(
        id=f"{instance}/{path.name}", session_id=recording.session_id, file=path.name, instance=instance,
        transport=meta.get("transport"), call_sid=meta.get("call_sid"), agent=meta.get("agent"),
        started_at=datetime.fromtimestamp(started, timezone.utc),
        ended_at=datetime.now(timezone.utc) if ended else None, lines=recording.lines,
    )


class RecordingsIndex(Protocol):
    def opened(self, recording: Any) -> None: ...

    def closed(self, recording: Any) -> None: ...

    def removed(self, recording: Any) -> None: ...

    async def list(self, limit: int = 50) -> list[RecordingEntry]: ...


class MemoryRecordingsIndex:
    """This process's recordings (bounded: the oldest are forgotten past ``limit``; their files stay)."""

    def __init__(self, instance: str, limit: int = 10_000) -> None:
        self.instance = instance
        self.limit = limit
        self.entries: OrderedDict[str, RecordingEntry] = OrderedDict()

    def put(self, entry: RecordingEntry) -> None:
        self.entries[entry.id] = entry
        while len(self.entries) > self.limit:
            self.entries.popitem(last=False)

    def drop(self, entry_id: str) -> None:
        self.entries.pop(entry_id, None)

    def opened(self, recording: Any) -> None:
        entry = entry_for(recording, self.instance)
        if entry is not None:
            self.put(entry)

    def closed(self, recording: Any) -> None:
        entry = entry_for(recording, self.instance, ended=True)
        if entry is not None:
            self.put(entry)

    def removed(self, recording: Any) -> None:
        path = getattr(recording, "deleted", None)
        if path:
            self.drop(f"{self.instance}/{path[-1].name}")

    async def list(self, limit: int = 50) -> list[RecordingEntry]:
        return sorted(self.entries.values(), key=lambda e: e.started_at, reverse=True)[:limit]


class RedisRecordingsIndex(MemoryRecordingsIndex):
    """Every instance's recordings in Redis; this process's own also in memory (the fallback)."""

    def __init__(self, link: RedisLink, limit: int = 10_000) -> None:
        super().__init__(link.instance, limit)
        self.link = link
        self._pending: dict[str, RecordingEntry | None] = {}  # id -> entry to write, or None to delete
        link.on_reconnect(self._flush)

    @property
    def _zset(self) -> str:
        return self.link.key("recordings")

    @property
    def _hash(self) -> str:
        return self.link.key("recordings", "entries")

    def put(self, entry: RecordingEntry) -> None:
        super().put(entry)
        self._pending[entry.id] = entry
        self.link.spawn(self._flush())

    def drop(self, entry_id: str) -> None:
        super().drop(entry_id)
        self._pending[entry_id] = None
        self.link.spawn(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            entry_id, entry = next(iter(self._pending.items()))

            async def op(r: Any, entry_id: str = entry_id, entry: RecordingEntry | None = entry) -> bool:
                async with r.pipeline(transaction=True) as pipe:
                    if entry is None:
                        pipe.zrem(self._zset, entry_id)
                        pipe.hdel(self._hash, entry_id)
                    else:
                        pipe.zadd(self._zset, {entry_id: entry.started_at.timestamp()})
                        pipe.hset(self._hash, entry_id, entry.model_dump_json())
                    await pipe.execute()
                return True

            if not await self.link.run(op, False):
                return  # kept for when Redis is back
            if self._pending.get(entry_id, ...) is entry:
                del self._pending[entry_id]

    async def list(self, limit: int = 50) -> list[RecordingEntry]:
        async def op(r: Any) -> list[RecordingEntry] | None:
            ids = await r.zrevrange(self._zset, 0, max(0, limit - 1))
            if not ids:
                return []
            raws = await r.hmget(self._hash, [i.decode() for i in ids])
            return [RecordingEntry.model_validate_json(raw) for raw in raws if raw]

        entries = await self.link.run(op, None)
        return entries if entries is not None else await super().list(limit)
