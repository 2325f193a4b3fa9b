"""Per-provider health, counted as calls use the providers: cheap enough for ``GET /v1/health`` every second.

Nothing here makes a request: clients report outcomes (``ok`` / ``error``) and the credential checks they ran
(cached by the client), and ``snapshot()`` reads the counters.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .. import metrics

__all__ = ["ProviderHealth"]

RECENT = 60.0  # seconds: a provider whose last outcome in this window is an error is reported down


@dataclass
class _Counters:
    ok: int = 0
    errors: int = 0
    fallbacks: int = 0
    last_ok: float | None = None
    last_error: float | None = None
    last_error_detail: str = ""
    by_kind: dict[str, int] = field(default_factory=dict)


class ProviderHealth:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._providers: dict[str, _Counters] = {}

    def _get(self, name: str) -> _Counters:
        c = self._providers.get(name)
        if c is None:
            c = self._providers[name] = _Counters()
        return c

    def ok(self, name: str) -> None:
        with self._lock:
            c = self._get(name)
            c.ok += 1
            c.last_ok = time.monotonic()

    def error(self, name: str, kind: str, detail: str = "") -> None:
        """``kind``: auth, timeout, rate_limited, server, protocol, disconnected, ..."""
        with self._lock:
            c = self._get(name)
            c.errors += 1
            c.by_kind[kind] = c.by_kind.get(kind, 0) + 1
            c.last_error = time.monotonic()
            c.last_error_detail = detail[:200]
        metrics.provider_error(name, kind)  # telebridge_provider_errors_total

    def fallback(self, name: str) -> None:
        with self._lock:
            self._get(name).fallbacks += 1

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for name, c in sorted(self._providers.items()):
                failing = c.last_error is not None and now - c.last_error < RECENT and (
                    c.last_ok is None or c.last_ok < c.last_error)
                out[name] = {
                    "up": not failing, "ok": c.ok, "errors": c.errors, "fallbacks": c.fallbacks,
                    "errors_by_kind": dict(c.by_kind),
                    "detail": c.last_error_detail if failing else "",
                }
        return out


