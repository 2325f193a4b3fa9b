"""Realtime session tokens shared through Redis: minted on one worker or instance, redeemed on any, once.

``POST /v1/realtime/sessions`` mints a token on whichever worker answers; the browser's WebSocket may land on
another. The minting worker stores the token's SHA-256 (never the token) under ``<prefix>:token:<digest>`` with
the token's lifetime; the worker the WebSocket reaches takes it with ``GETDEL``, so a token opens one session in
the whole deployment. While Redis is away, tokens work on the worker that minted them only.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from .redis_client import RedisLink

__all__ = ["RedisTokens"]


class RedisTokens:
    def __init__(self, link: RedisLink) -> None:
        self.link = link

    def _key(self, value: str) -> str:
        return self.link.key("token", hashlib.sha256(value.encode("utf-8")).hexdigest())

    async def store(self, value: str, key_label: str, ttl: float) -> bool:
        async def op(r: Any) -> bool:
            return bool(await r.set(self._key(value), key_label, ex=max(1, math.ceil(ttl))))

        return await self.link.run(op, False)

    async def redeem(self, value: str) -> tuple[bool, str | None]:
        """(Redis answered, the label of the key that minted the token if it was live — it is now used up)."""
        async def op(r: Any) -> tuple[bool, str | None]:
            raw = await r.getdel(self._key(value))
            return True, raw.decode() if raw else None

        return await self.link.run(op, (False, None))
