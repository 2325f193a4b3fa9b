"""The console's charts: turn latency and concurrent calls per minute over the last hour, sans-I/O.

Fed by the hub (every answered turn's latency to first audio heard, every change in the number of live calls)
with the wall-clock time from its caller. Bounded: :data:`MINUTES` buckets, :data:`SAMPLES_PER_MINUTE` latency
samples in each (plenty for the percentiles at 50 concurrent calls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MinuteBuckets", "MINUTES", "SAMPLES_PER_MINUTE"]

MINUTES = 60  # the charts' hour
SAMPLES_PER_MINUTE = 5000  # latency samples kept per minute for the percentiles


@dataclass
class _Minute:
    latencies: list[float] = field(default_factory=list)
    peak: int = 0  # most calls live at once during the minute
    end: int = 0  # calls live at the end of the minute (so far)


class MinuteBuckets:
    """Turn-latency samples and concurrent calls per minute, for the last ``minutes`` minutes."""

    def __init__(self, minutes: int = MINUTES) -> None:
        self.minutes = minutes
        self._buckets: dict[int, _Minute] = {}
        self._live = 0  # calls live now

    def _bucket(self, now: float) -> _Minute:
        minute = int(now // 60)
        bucket = self._buckets.get(minute)
        if bucket is None:
            bucket = self._buckets[minute] = _Minute(peak=self._live, end=self._live)
            for old in [m for m in self._buckets if m <= minute - self.minutes]:
                del self._buckets[old]
        return bucket

    def calls(self, live: int, now: float) -> None:
        bucket = self._bucket(now)
        self._live = live
        bucket.peak = max(bucket.peak, live)
        bucket.end = live

    def latency(self, seconds: float, now: float) -> None:
        bucket = self._bucket(now)
        if len(bucket.latencies) < SAMPLES_PER_MINUTE:
            bucket.latencies.append(float(seconds))

    def series(self, now: float) -> list[dict[str, Any]]:
        """One point per minute, oldest first: ``t`` (the minute's start), ``calls`` (peak concurrent calls),
        ``turns``, and ``p50`` / ``p90`` / ``p99`` of the turn latency (None for a minute without turns)."""
        last = int(now // 60)
        first = last - self.minutes + 1
        level = 0
        for minute in sorted(self._buckets):  # the level going into the window: the newest bucket before it
            if minute < first:
                level = self._buckets[minute].end
        out = []
        for minute in range(first, last + 1):
            bucket = self._buckets.get(minute)
            if bucket is not None:  # its peak started at the level it was created with: the minute's opening one
                peak, level = bucket.peak, bucket.end
                values = sorted(bucket.latencies)
            else:
                peak, values = level, []
            out.append({"t": minute * 60, "calls": peak, "turns": len(values), "p50": _percentile(values, 50),
                        "p90": _percentile(values, 90), "p99": _percentile(values, 99)})
        return out


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``values`` (None when empty)."""
    if not values:
        return None
    rank = max(1, math.ceil(q / 100 * len(values)))
    return round(values[rank - 1], 3)
