"""Ephemeral realtime session tokens: minted for a key holder, short-lived, single use, stored hashed.

Sans-I/O: every method takes the current time (Unix seconds) from the caller, so expiry is tested with a
synthetic clock. Tokens are ``tbst_`` + 32 random bytes (URL-safe base64: valid in a WebSocket subprotocol and a
query string). Only their SHA-256 is stored, looked up by that digest; a token leaves the store when it is
redeemed, when it expires, or never enters it when the store is full (the caller answers 429).
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass

PREFIX = "tbst_"


@dataclass(frozen=True)
class Minted:
    value: str
    expires_at: int  # Unix seconds, as OpenAI's client_secret.expires_at


class StoreFull(Exception):
    """Too many unredeemed, unexpired tokens: mint again once some are used or have expired."""


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


class SessionTokens:
    def __init__(self, ttl: float, max_outstanding: int = 10_000) -> None:
        if ttl <= 0 or max_outstanding <= 0:
            raise ValueError("ttl and max_outstanding must be positive")
        self.ttl = ttl
        self.max_outstanding = max_outstanding
        # digest -> (key label, expires at); insertion order is expiry order (one TTL for all).
        self._tokens: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tokens)

    def _purge(self, now: float) -> None:
        while self._tokens:
            digest, (_, expires) = next(iter(self._tokens.items()))
            if expires > now:
                return
            del self._tokens[digest]

    def mint(self, key_label: str, now: float) -> Minted:
        self._purge(now)
        if len(self._tokens) >= self.max_outstanding:
            raise StoreFull(f"{self.max_outstanding} session tokens are outstanding")
        value = PREFIX + secrets.token_urlsafe(32)
        expires = now + self.ttl
        self._tokens[_digest(value)] = (key_label, expires)
        return Minted(value=value, expires_at=int(expires))

    def redeem(self, value: str, now: float) -> str | None:
        """The label of the key that minted ``value`` if it is live (it is then used up), else None."""
        if not value.startswith(PREFIX) or len(value) > 128:
            return None
        entry = self._tokens.pop(_digest(value), None)
        if entry is None:
            return None
        key_label, expires = entry
        return key_label if now < expires else None

    def adopt(self, value: str, key_label: str, now: float) -> None:
        """A live token minted by another worker (redeemed from the shared store): usable here, once."""
        self._tokens[_digest(value)] = (key_label, now + self.ttl)

    def discard(self, value: str) -> None:
        """A token the shared store says is used up or unknown: not usable here either."""
        self._tokens.pop(_digest(value), None)

    @staticmethod
    def looks_like_token(value: str) -> bool:
        return value.startswith(PREFIX)
