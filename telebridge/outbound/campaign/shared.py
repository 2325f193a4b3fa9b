"""A campaign run's part in shared state (``REDIS_URL``): dial pacing per Twilio account, and row claims.

Before each dial, :meth:`SharedCampaign.before_dial` claims the row for this run (a row another run of the same
campaign claimed first raises :class:`ClaimedElsewhere`, which the runner records as ``elsewhere``) and then waits
for the account's next dial slot, shared by every run dialing from that account. See
:mod:`telebridge.state.limiter`. Without ``REDIS_URL`` both are no-ops: the run's own scheduler paces it.
"""

from __future__ import annotations

import socket
from typing import Any

from telebridge.state.limiter import LocalClaims, LocalDialLimiter, RedisClaims, RedisDialLimiter

__all__ = ["ClaimedElsewhere", "SharedCampaign", "open_shared"]


class ClaimedElsewhere(Exception):
    kind = "claimed"

    def __init__(self) -> None:
        super().__init__("dialed by another run of this campaign (shared through REDIS_URL)")


class SharedCampaign:
    def __init__(self, link: Any, claims: Any, limiter: Any, cps: float) -> None:
        self.link = link
        self.claims = claims
        self.limiter = limiter
        self.cps = cps

    async def before_dial(self, row_key: str) -> None:
        if not await self.claims.claim(row_key):
            raise ClaimedElsewhere()
        await self.limiter.wait_turn(self.cps)

    async def aclose(self) -> None:
        if self.link is not None:
            await self.link.stop()


async def open_shared(plan: Any) -> SharedCampaign:
    """From the plan's settings: Redis-backed when ``REDIS_URL`` is set, else pass-through."""
    from telebridge.state import open_link

    # One runner id per machine and state file: a re-run (resume) re-claims its own rows.
    runner = f"{socket.gethostname()}:{plan.state_path.resolve()}"
    link = open_link(plan.settings, instance=runner)
    if link is None:
        return SharedCampaign(None, LocalClaims(), LocalDialLimiter(), plan.policy.cps)
    await link.start()
    claims = RedisClaims(link, plan.campaign_id, runner)
    limiter = RedisDialLimiter(link, plan.settings.twilio_account_sid or "default")
    return SharedCampaign(link, claims, limiter, plan.policy.cps)
