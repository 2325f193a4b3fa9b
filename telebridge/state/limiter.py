"""Dial pacing shared by every campaign runner of one Twilio account, and claims on a campaign's rows.

Twilio limits how many calls per second an *account* may start. One ``telebridge campaign run`` spaces its own
dials (:class:`~telebridge.outbound.campaign.scheduler.Scheduler`, ``--cps``); several runs at once — on one
machine or many — would add up. With ``REDIS_URL`` set they share one pace per account:

* :class:`RedisDialLimiter` hands out dial slots from a Redis key per account: each :meth:`wait_turn` reserves
  the next slot at least ``1/cps`` s after the previous one (a Lua script, using Redis's own clock, so machines'
  clocks do not matter) and sleeps until it;
* :class:`RedisClaims` makes a campaign a shared queue: before a row is dialed its runner claims it
  (``SET NX``, per campaign and row key); a row claimed by another runner is left to it, so two runs of the same
  contacts file on two machines divide the rows and no contact is called by both.

Without Redis (or while it is away) :class:`LocalDialLimiter` and :class:`LocalClaims` let everything through:
the run's own scheduler already spaces its dials, and a single runner needs no claims.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from .redis_client import RedisLink

log = logging.getLogger("telebridge.state.limiter")

__all__ = ["DialLimiter", "LocalDialLimiter", "RedisDialLimiter", "Claims", "LocalClaims", "RedisClaims"]

# KEYS[1]: the account's last reserved slot (seconds, Redis clock). ARGV[1]: the spacing in seconds.
# Returns how long the caller waits (seconds, as a string: Lua numbers are truncated to integers on return).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local gap = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now, last + gap)
redis.call('SET', KEYS[1], string.format('%.6f', slot), 'PX', math.ceil((slot - now + gap) * 1000) + 1000)
return string.format('%.6f', slot - now)
"""
MAX_WAIT = 3600.0


class DialLimiter(Protocol):
    async def wait_turn(self, cps: float) -> float: ...


class LocalDialLimiter:
    async def wait_turn(self, cps: float) -> float:
        return 0.0


class RedisDialLimiter:
    def __init__(self, link: RedisLink, account: str) -> None:
        self.link = link
        self.key = link.key("dial-pace", account or "default")
        self._script: Any = None
        self._warned = False

    async def reserve(self, cps: float) -> float | None:
        """Reserve the account's next dial slot; seconds until it, or None when Redis cannot be reached."""
        if self._script is None:
            self._script = self.link.client.register_script(_RESERVE)

        async def op(r: Any) -> float:
            return float(await self._script(keys=[self.key], args=[f"{1.0 / cps:.6f}"], client=r))

        return await self.link.run(op, None)

    async def wait_turn(self, cps: float) -> float:
        """Sleep until this process may dial; returns the seconds waited."""
        wait = await self.reserve(cps)
        if wait is None:
            if not self._warned:
                log.warning("Redis is unreachable: dials are paced by this run alone until it is back")
                self._warned = True
            return 0.0
        self._warned = False
        wait = min(max(0.0, wait), MAX_WAIT)
        if wait > 0:
            await asyncio.sleep(wait)
        return wait


class Claims(Protocol):
    async def claim(self, row_key: str) -> bool: ...


class LocalClaims:
    async def claim(self, row_key: str) -> bool:
        return True


class RedisClaims:
    """Rows of campaign ``campaign`` claimed by runner ``runner``; a claim lasts ``ttl`` seconds (retries
    included: the same runner re-claims its own rows)."""

    def __init__(self, link: RedisLink, campaign: str, runner: str, ttl: int = 14 * 86400) -> None:
        self.link = link
        self.campaign = campaign
        self.runner = runner
        self.ttl = ttl

    def _key(self, row_key: str) -> str:
        return self.link.key("campaign", self.campaign, "claim", row_key)

    async def claim(self, row_key: str) -> bool:
        """Whether this runner may dial the row (True too when Redis is away: the run goes on alone)."""
        async def op(r: Any) -> bool:
            key = self._key(row_key)
            if await r.set(key, self.runner, nx=True, ex=self.ttl):
                return True
            holder = await r.get(key)
            return holder is not None and holder.decode() == self.runner

        return await self.link.run(op, True)
