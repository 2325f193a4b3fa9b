"""API keys: the configured set, matched in constant time, known to logs only by a label (``key1``, ``key2``…)."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..settings import Settings


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


class KeyRing:
    """The service's own API keys. Only SHA-256 digests are kept; the labels are positions, never derived from a key.

    ``match`` compares the presented value with *every* key (fixed-length digests, :func:`hmac.compare_digest`, no
    early exit), so neither the time taken nor the answer's shape says how close a guess was or which key it hit.
    """

    def __init__(self, keys: list[str]) -> None:
        unique: list[str] = []
        for key in keys:
            key = key.strip()
            if key and key not in unique:
                unique.append(key)
        self._digests = [(f"key{i}", _digest(key)) for i, key in enumerate(unique, 1)]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """``TELEBRIDGE_API_KEY`` (the outbound API's key) first, then each of ``TELEBRIDGE_API_KEYS``."""
        keys: list[str] = []
        if settings.api_key is not None:
            keys.append(settings.api_key.get_secret_value())
        if settings.api_keys is not None:
            keys.extend(settings.api_keys.get_secret_value().split(","))
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:  # never the keys, nor their digests
        return f"KeyRing({len(self._digests)} key(s))"

    def match(self, presented: str) -> str | None:
        """The label of the key ``presented`` is, or None."""
        digest = _digest(presented)
        found: str | None = None
        for label, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = label
        return found
