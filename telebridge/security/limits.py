"""Rate and concurrency limits, sans-I/O: the caller passes the time, so tests drive them with a synthetic clock.

Subjects are strings such as ``key:key1`` or ``addr:203.0.113.9``; a request is usually checked against several
(its key and its client address) with :func:`admit_all`, which records a hit only when every limit allows it —
a refused request never counts, so a client that keeps retrying is not locked out for longer.
A limit of 0 means "no limit". Memory is bounded: idle subjects are forgotten, and past ``max_subjects`` the
least recently seen one is.

These count one process's requests. With ``REDIS_URL`` the guard also asks their shared counterparts
(:mod:`telebridge.state.guard_limits`), which count every worker and instance under the limiter's ``name``; the
classes here still count this process's own, which decide alone while Redis is away.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass


class WindowLimiter:
    """At most ``limit`` hits per subject in any sliding ``window`` seconds (e.g. uploads per hour)."""

    def __init__(self, limit: int, window: float, max_subjects: int = 50_000, name: str = "") -> None:
        self.limit = limit
        self.window = window
        self.name = name  # what the shared (Redis) count of this limit is called
        self.max_subjects = max_subjects
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def _live(self, subject: str, now: float) -> deque[float] | None:
        hits = self._hits.get(subject)
        if hits is None:
            return None
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if not hits:
            del self._hits[subject]
            return None
        return hits

    def retry_after(self, subject: str, now: float) -> float:
        """0 if a hit is allowed now, else the seconds until one is."""
        if self.limit <= 0:
            return 0.0
        hits = self._live(subject, now)
        if hits is None or len(hits) < self.limit:
            return 0.0
        return max(hits[0] + self.window - now, 0.001)

    def record(self, subject: str, now: float) -> None:
        if self.limit <= 0:
            return
        hits = self._live(subject, now)
        if hits is None:
            if len(self._hits) >= self.max_subjects:
                self._hits.popitem(last=False)
            hits = self._hits[subject] = deque()
        hits.append(now)
        self._hits.move_to_end(subject)

    def count(self, subject: str, now: float) -> int:
        hits = self._live(subject, now)
        return 0 if hits is None else len(hits)


def admit_all(checks: Iterable[tuple[WindowLimiter, str]], now: float) -> float:
    """Record one hit on every (limiter, subject) if all allow it and return 0; else record none and return the
    longest wait."""
    checks = list(checks)
    wait = max((limiter.retry_after(subject, now) for limiter, subject in checks), default=0.0)
    if wait == 0:
        for limiter, subject in checks:
            limiter.record(subject, now)
    return wait


class ConcurrencyLimiter:
    """At most ``limit`` simultaneous holders per subject (e.g. live realtime sessions)."""

    def __init__(self, limit: int, name: str = "") -> None:
        self.limit = limit
        self.name = name  # what the shared (Redis) count of this limit is called
        self._active: dict[str, int] = {}

    def active(self, subject: str) -> int:
        return self._active.get(subject, 0)

    def available(self, subject: str) -> bool:
        return self.limit <= 0 or self.active(subject) < self.limit

    def acquire(self, subject: str) -> None:
        self._active[subject] = self.active(subject) + 1

    def release(self, subject: str) -> None:
        left = self.active(subject) - 1
        if left > 0:
            self._active[subject] = left
        else:
            self._active.pop(subject, None)


@dataclass
class Lease:
    """Slots held on several concurrency limiters; :meth:`release` gives them all back, once (and then calls
    ``on_release``, which gives back the shared slots of the same session)."""

    held: list[tuple[ConcurrencyLimiter, str]]
    on_release: Callable[[], None] | None = None

    def release(self) -> None:
        held, self.held = self.held, []
        for limiter, subject in held:
            limiter.release(subject)
        on_release, self.on_release = self.on_release, None
        if on_release is not None:
            on_release()


def acquire_all(checks: Iterable[tuple[ConcurrencyLimiter, str]]) -> Lease | None:
    """A lease on every (limiter, subject), or None (and nothing held) when any is at its limit."""
    checks = list(checks)
    if not all(limiter.available(subject) for limiter, subject in checks):
        return None
    return hold_all(checks)


def hold_all(checks: Iterable[tuple[ConcurrencyLimiter, str]]) -> Lease:
    """A lease on every (limiter, subject) whatever their limits (the shared count already admitted it)."""
    checks = list(checks)
    for limiter, subject in checks:
        limiter.acquire(subject)
    return Lease(checks)


@dataclass(frozen=True)
class SessionLength:
    """The longest a session may last (``max_seconds`` 0 = unlimited), measured from its start."""

    max_seconds: float

    def remaining(self, started: float, now: float) -> float | None:
        """Seconds left (0 when over), or None when sessions are not limited."""
        if self.max_seconds <= 0:
            return None
        return max(started + self.max_seconds - now, 0.0)

    def expired(self, started: float, now: float) -> bool:
        left = self.remaining(started, now)
        return left is not None and left <= 0
