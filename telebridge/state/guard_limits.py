"""The guard's abuse limits counted across every worker and instance: realtime sessions at once, uploads and
failed console logins per hour or minute. Without this, ``--workers 4`` would let a key hold 4 × its sessions.

Both kinds live in Redis sorted sets, one per limit and subject, ``<prefix>:limit:<name>:<subject>`` (e.g.
``telebridge:limit:sessions-per-key:key:key1``), changed only by Lua scripts so each decision is atomic:

* **windows** (:meth:`RedisGuardLimits.admit`): members are hits scored by their time. One script drops the hits
  that slid out of every set of the request, counts them, and adds the new hit to all of them only when every
  limit admits it — as :func:`~telebridge.security.limits.admit_all`, a refused request never counts.
* **concurrency** (:meth:`RedisGuardLimits.acquire`): members are leases (one per session, named after the
  instance) scored by when they expire. A lease lives ``lease_seconds`` (30) and the process holding it pushes
  its expiry forward every third of that while the session lives; the script drops expired members before
  counting. A worker killed mid-session stops refreshing, so its sessions free their slots within
  ``lease_seconds``. Releasing a lease removes it at once.

Times come from the caller (the guard's clock, ``time.time``): the machines' clocks must agree to well within
``lease_seconds`` (NTP does). Every key carries an expiry, so idle subjects vanish.

**Redis away.** Every call returns None instead of raising (:meth:`RedisLink.run` gives up within half a second)
and the guard decides with the in-process limiters alone, which count this process's own requests all along. So
limits never fail closed — a Redis outage does not lock everyone out of new sessions — nor open: each process
still enforces every limit by itself (the deployment-wide bound is then N × the limit, as without Redis), and a
session in progress is never touched. Live leases are written back as soon as Redis answers again (the reconnect
hook), so a Redis restarted empty counts the sessions that are still running.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from telebridge.security.limits import ConcurrencyLimiter, WindowLimiter

from .redis_client import RedisLink

__all__ = ["RedisGuardLimits", "LEASE_SECONDS"]

LEASE_SECONDS = 30.0

# KEYS: the sets. ARGV: now, the new hit's member, mode ("admit" | "check" | "add"), then limit and window per key.
# Returns the seconds to wait as a string (Lua numbers are truncated to integers on return); "0" = admitted.
_WINDOW = """
local now = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local limit, window = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if ARGV[3] ~= 'add' and limit > 0 then
    local n = redis.call('ZCARD', key)
    if n >= limit then
      local oldest = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
      wait = math.max(wait, tonumber(oldest[2]) + window - now, 0.001)
    end
  end
end
if wait > 0 or ARGV[3] == 'check' then
  return string.format('%.6f', wait)
end
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[3 + 2 * i])
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, math.ceil(window * 1000) + 1000)
end
return '0'
"""

# KEYS: the sets. ARGV: now, the lease's expiry, the lease, the key expiry (ms), then the limit per key.
# Returns 0 when the lease was added to every set, else the 1-based index of the first set that is full.
_ACQUIRE = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local limit = tonumber(ARGV[4 + i])
  if limit > 0 and redis.call('ZCARD', key) >= limit then
    return i
  end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[2], ARGV[3])
  redis.call('PEXPIRE', key, ARGV[4])
end
return 0
"""


class RedisGuardLimits:
    def __init__(self, link: RedisLink, *, clock: Callable[[], float] = time.time,
                 lease_seconds: float = LEASE_SECONDS) -> None:
        self.link = link
        self.clock = clock
        self.lease_seconds = lease_seconds
        self._window: Any = None
        self._acquire: Any = None
        self._ids = itertools.count(1)
        self._me = f"{link.instance}:{uuid.uuid4().hex[:8]}"  # unique even if two instances share a name
        self._live: dict[str, list[str]] = {}  # lease → its sets, while its session lives
        self._lock = asyncio.Lock()  # a release never overtakes a refresh that still carries the lease
        self._refreshing = False
        link.on_reconnect(self.refresh)

    def _key(self, name: str, subject: str) -> str:
        return self.link.key("limit", name or "unnamed", subject)

    def _scripts(self) -> None:
        if self._window is None:
            self._window = self.link.client.register_script(_WINDOW)
            self._acquire = self.link.client.register_script(_ACQUIRE)

    # --- windows ------------------------------------------------------------------------------------------------
    async def admit(self, checks: Sequence[tuple[WindowLimiter, str]], now: float, mode: str = "admit"
                    ) -> float | None:
        """``admit``: record a hit on every limit if all allow it (0), else none (the longest wait). ``check``:
        the wait only. ``add``: record the hit whatever the limits. None: Redis is unreachable."""
        checks = [(limiter, subject) for limiter, subject in checks if limiter.limit > 0]
        if not checks:
            return 0.0
        self._scripts()
        args: list[Any] = [f"{now:.6f}", f"{self._me}:{next(self._ids)}", mode]
        for limiter, _ in checks:
            args += [limiter.limit, f"{limiter.window:.6f}"]

        async def op(r: Any) -> float:
            keys = [self._key(limiter.name, subject) for limiter, subject in checks]
            return float(await self._window(keys=keys, args=args, client=r))

        return await self.link.run(op, None)

    # --- concurrency --------------------------------------------------------------------------------------------
    async def acquire(self, checks: Sequence[tuple[ConcurrencyLimiter, str]], now: float
                      ) -> tuple[int | None, str | None]:
        """(0, the lease) when every limit had room — it is held until :meth:`release`; (i, None) when the i-th
        check (from 1) is full; (None, None) when Redis is unreachable."""
        keys = self.lease_keys(checks)
        if not keys:
            return 0, None
        limited = [i for i, (limiter, _) in enumerate(checks, 1) if limiter.limit > 0]
        self._scripts()
        lease = self.new_lease()
        args = [f"{now:.6f}", f"{now + self.lease_seconds:.6f}", lease, self._key_ms(),
                *(limiter.limit for limiter, _ in checks if limiter.limit > 0)]

        async def op(r: Any) -> int:
            return int(await self._acquire(keys=keys, args=args, client=r))

        full = await self.link.run(op, None)
        if full is None:
            return None, None
        if full:
            return limited[full - 1], None
        self.hold(lease, keys)
        return 0, lease

    def lease_keys(self, checks: Sequence[tuple[ConcurrencyLimiter, str]]) -> list[str]:
        return [self._key(limiter.name, subject) for limiter, subject in checks if limiter.limit > 0]

    def new_lease(self) -> str:
        return f"{self._me}:{next(self._ids)}"

    def hold(self, lease: str, keys: list[str]) -> None:
        """Keep ``lease`` alive on ``keys`` (refreshed, and written back after a Redis outage) until released."""
        if not keys:
            return
        self._live[lease] = keys
        if not self._refreshing:
            self._refreshing = True
            self.link.spawn(self._refresh_loop())

    def release(self, lease: str) -> None:
        """The session ended: its slots are freed at once (in the background; if Redis is away, by expiry)."""
        keys = self._live.pop(lease, None)
        if keys:
            self.link.spawn(self._remove(lease, keys))

    async def _remove(self, lease: str, keys: list[str]) -> None:
        async def op(r: Any) -> None:
            pipe = r.pipeline(transaction=False)
            for key in keys:
                pipe.zrem(key, lease)
            await pipe.execute()

        async with self._lock:
            await self.link.run(op, None)

    async def refresh(self) -> bool:
        """Push every live lease's expiry ``lease_seconds`` ahead (re-adding it if Redis lost it). False: Redis
        did not answer."""
        async with self._lock:
            live = list(self._live.items())
            if not live:
                return True
            expiry = f"{self.clock() + self.lease_seconds:.6f}"

            async def op(r: Any) -> bool:
                pipe = r.pipeline(transaction=False)
                for lease, keys in live:
                    for key in keys:
                        pipe.zadd(key, {lease: expiry})
                        pipe.pexpire(key, self._key_ms())
                await pipe.execute()
                return True

            return await self.link.run(op, False)

    async def _refresh_loop(self) -> None:
        try:
            while self._live:
                await asyncio.sleep(self.lease_seconds / 3)
                await self.refresh()
        finally:
            self._refreshing = False

    def _key_ms(self) -> int:
        return int(self.lease_seconds * 1000) + 1000
