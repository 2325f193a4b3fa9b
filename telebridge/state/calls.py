"""The call registry and stream outcomes on Redis, so every worker and instance sees every call.

Layout (``<prefix>`` is ``TELEBRIDGE_REDIS_PREFIX``):

* ``<prefix>:call:<CallSid>`` — a hash: ``record`` (the :class:`~telebridge.outbound.registry.CallRecord` as
  JSON), ``private`` (an outbound call's data, agent and AMD flag; never returned by the API) and ``outcome`` (how
  our media stream ended, for Twilio's ``<Connect action>`` request, which any worker may receive). The hash
  expires ``TELEBRIDGE_CALL_RECORD_TTL`` seconds after its last update.
* ``<prefix>:calls`` — a sorted set of CallSids by creation time: ``GET /v1/calls`` lists from it.

Updates are read-merge-write under ``WATCH`` (optimistic locking), so a status callback on one instance and the
media stream's start on another never overwrite each other; :func:`merge_record` is the same merge the in-process
registry uses. Every record written is mirrored in a local :class:`MemoryCallRegistry`: when Redis goes away,
reads and writes carry on there (calls in progress never wait for Redis), and what changed meanwhile is pushed
once Redis is back.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from typing import Any

from telebridge.outbound.registry import CallRecord, MemoryCallRegistry, merge_record

from .redis_client import RedisLink

__all__ = ["RedisCallRegistry", "StreamOutcomes"]

_MERGE_TRIES = 20


class RedisCallRegistry:
    """:class:`~telebridge.outbound.registry.CallRegistry` shared through Redis, with a local fallback."""

    def __init__(self, link: RedisLink, ttl: int, local: MemoryCallRegistry | None = None) -> None:
        self.link = link
        self.ttl = ttl
        self.local = local or MemoryCallRegistry()
        self._dirty: set[str] = set()
        self._local_outcomes: OrderedDict[str, str] = OrderedDict()
        link.on_reconnect(self._push_dirty)

    def _key(self, call_sid: str) -> str:
        return self.link.key("call", call_sid)

    @property
    def _index(self) -> str:
        return self.link.key("calls")

    def _view(self, record: CallRecord) -> CallRecord:
        """``ran_here`` as seen by this instance: the conversation ran in this very process."""
        if record.instance is None:
            return record
        return record.model_copy(update={"ran_here": record.instance == self.link.instance})

    # --- the public record ------------------------------------------------------------------------------------
    async def update(self, call_sid: str, **fields: Any) -> CallRecord:
        if fields.get("ran_here"):
            fields["instance"] = self.link.instance
        record = await self.link.run(lambda r: self._merge(r, call_sid, fields), None)
        if record is None:
            record = await self.local.update(call_sid, **fields)
            self._dirty.add(call_sid)
        else:
            self.local.put(record)
        return self._view(record)

    async def _merge(self, r: Any, call_sid: str, fields: dict[str, Any]) -> CallRecord:
        from redis.exceptions import WatchError

        key = self._key(call_sid)
        for _ in range(_MERGE_TRIES):
            async with r.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, "record")
                    record = merge_record(CallRecord.model_validate_json(raw) if raw else None, call_sid, fields)
                    pipe.multi()
                    pipe.hset(key, "record", record.model_dump_json())
                    pipe.expire(key, self.ttl)
                    pipe.zadd(self._index, {call_sid: record.created_at.timestamp()})
                    pipe.zremrangebyscore(self._index, "-inf", time.time() - self.ttl)
                    await pipe.execute()
                    return record
                except WatchError:
                    continue
        raise RuntimeError(f"call {call_sid}: the record kept changing under {_MERGE_TRIES} updates")

    async def get(self, call_sid: str) -> CallRecord | None:
        async def op(r: Any) -> CallRecord | None:
            raw = await r.hget(self._key(call_sid), "record")
            return CallRecord.model_validate_json(raw) if raw else None

        missing = object()
        record = await self.link.run(op, missing)
        if record is missing or (record is None and call_sid in self._dirty):
            record = await self.local.get(call_sid)
        return self._view(record) if record is not None else None  # type: ignore[arg-type]

    async def list(self, limit: int = 50) -> list[CallRecord]:
        """The most recently created calls of every instance, newest first."""
        async def op(r: Any) -> list[CallRecord] | None:
            sids = await r.zrevrange(self._index, 0, max(0, limit - 1))
            if not sids:
                return []
            async with r.pipeline(transaction=False) as pipe:
                for sid in sids:
                    pipe.hget(self._key(sid.decode()), "record")
                raws = await pipe.execute()
            return [CallRecord.model_validate_json(raw) for raw in raws if raw]

        records = await self.link.run(op, None)
        if records is None:
            records = await self.local.list(limit)
        return [self._view(r) for r in records]

    async def _push_dirty(self) -> None:
        """Once Redis is back: merge what was recorded locally while it was away."""
        for call_sid in list(self._dirty):
            record = await self.local.get(call_sid)
            if record is not None:
                fields = record.model_dump(exclude={"call_sid", "history", "updated_at"})
                merged = await self._merge(self.link.client, call_sid, fields)
                self.local.put(merged)
            self._dirty.discard(call_sid)
            private = await self.local.get_private(call_sid)
            if private is not None:
                await self._write_field(self.link.client, call_sid, "private", json.dumps(private))
        for call_sid, outcome in list(self._local_outcomes.items()):
            await self._write_field(self.link.client, call_sid, "outcome", outcome)

    # --- private data (never returned by the API) ---------------------------------------------------------------
    async def _write_field(self, r: Any, call_sid: str, field: str, value: str) -> bool:
        key = self._key(call_sid)
        async with r.pipeline(transaction=True) as pipe:
            pipe.hset(key, field, value)
            pipe.expire(key, self.ttl)
            await pipe.execute()
        return True

    async def set_private(self, call_sid: str, data: dict[str, Any]) -> None:
        await self.local.set_private(call_sid, data)
        ok = await self.link.run(lambda r: self._write_field(r, call_sid, "private", json.dumps(data)), False)
        if not ok:
            self._dirty.add(call_sid)

    async def get_private(self, call_sid: str) -> dict[str, Any] | None:
        data = await self.local.get_private(call_sid)
        if data is not None:
            return data

        async def op(r: Any) -> dict[str, Any] | None:
            raw = await r.hget(self._key(call_sid), "private")
            return json.loads(raw) if raw else None

        return await self.link.run(op, None)

    # --- stream outcomes ----------------------------------------------------------------------------------------
    async def set_outcome(self, call_sid: str, outcome: str) -> None:
        ok = await self.link.run(lambda r: self._write_field(r, call_sid, "outcome", outcome), False)
        if ok:
            self._local_outcomes.pop(call_sid, None)
        else:
            self._local_outcomes[call_sid] = outcome
            while len(self._local_outcomes) > 4096:
                self._local_outcomes.popitem(last=False)

    async def get_outcome(self, call_sid: str) -> str | None:
        async def op(r: Any) -> str | None:
            raw = await r.hget(self._key(call_sid), "outcome")
            return raw.decode() if raw else None

        return await self.link.run(op, None)


class StreamOutcomes:
    """How each media stream we closed ended (``completed`` / ``failed``), by CallSid, for Twilio's ``<Connect
    action>`` request — which may reach another worker than the one that ran the stream.

    Written synchronously by the media stream (a bounded local dict, plus a background write to the shared
    registry when there is one); read with :meth:`fetch`, which looks in the shared registry on a local miss.
    """

    def __init__(self, shared: RedisCallRegistry | None = None, limit: int = 4096) -> None:
        self.shared = shared
        self.limit = limit
        self._local: OrderedDict[str, str] = OrderedDict()

    def __setitem__(self, call_sid: str, outcome: str) -> None:
        self._local[call_sid] = outcome
        self._local.move_to_end(call_sid)
        while len(self._local) > self.limit:
            self._local.popitem(last=False)
        if self.shared is not None:
            self.shared.link.spawn(self.shared.set_outcome(call_sid, outcome))

    def __getitem__(self, call_sid: str) -> str:
        return self._local[call_sid]

    def __contains__(self, call_sid: object) -> bool:
        return call_sid in self._local

    def __len__(self) -> int:
        return len(self._local)

    def get(self, call_sid: str, default: str | None = None) -> str | None:
        return self._local.get(call_sid, default)

    async def fetch(self, call_sid: str, wait: float = 0.5) -> str | None:
        """This process's outcome, else the shared one (waiting up to ``wait`` s for the other worker's write)."""
        outcome = self._local.get(call_sid)
        if outcome is not None or self.shared is None or not call_sid:
            return outcome
        deadline = time.monotonic() + wait
        while True:
            outcome = await self.shared.get_outcome(call_sid)
            if outcome is not None or time.monotonic() >= deadline or not self.shared.link.up:
                return outcome
            await asyncio.sleep(0.05)
