"""The campaign scheduler, sans I/O: it never sleeps, dials or reads a clock.

The caller feeds it rows (:meth:`Scheduler.add`), the time (every method takes ``now``, epoch seconds) and the
outcome of every dial (:meth:`Scheduler.outcome`), and asks :meth:`Scheduler.next` what to do:

* :class:`Dial` ``(row, attempt)`` — place the call now (the row is then *in flight* until its outcome);
* :class:`Wait` ``(until)`` — nothing to do before ``until`` (``None``: until an outcome arrives);
* :class:`Done` — nothing is pending and nothing is in flight.

Rules, in the order they are applied:

* **Concurrency**: at most ``concurrency`` rows in flight.
* **Calls per second**: dials are spaced at least ``1 / cps`` seconds apart (``cps=0.5``: one every 2 s).
* **Quiet hours**: a row is not dialed while its zone's local time is inside them; it waits for their end.
* **Retries**: ``busy``, ``no-answer`` and ``failed`` are retried up to ``retries`` more times, after
  ``retry_delay * 2 ** (attempt - 1)`` seconds (5 min, 10 min, 20 min… by default). Everything else is
  final: ``completed`` (answered), ``canceled``, and telebridge's own ``invalid`` / ``error`` / ``unknown``.
* **Order**: the first row (in the order added: file order) among those allowed now goes first.
* :meth:`Scheduler.stop` (Ctrl-C): no more dials; :class:`Done` once in-flight rows have their outcome.
* :meth:`Scheduler.release`: a dial that certainly did not place a call (Twilio refused it before creating
  anything) gives its row back without using an attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Literal

from .quiet import QuietHours

__all__ = ["Policy", "Dial", "Wait", "Done", "Scheduler", "RETRYABLE", "FINAL_STATUSES"]

RETRYABLE = frozenset({"busy", "no-answer", "failed"})
# Twilio's final call statuses (the call is over): a call resource in any other status is still going.
FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


@dataclass(frozen=True)
class Policy:
    concurrency: int = 1
    cps: float = 1.0
    retries: int = 2
    retry_delay: float = 300.0
    quiet_hours: QuietHours | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not self.cps > 0:
            raise ValueError("calls per second must be more than 0")
        if self.retries < 0 or self.retry_delay < 0:
            raise ValueError("retries and the retry delay cannot be negative")

    def backoff(self, attempt: int) -> float:
        """The wait after the ``attempt``-th (1-based) attempt failed."""
        return self.retry_delay * 2 ** (attempt - 1)


@dataclass(frozen=True)
class Dial:
    row: int
    attempt: int  # 1-based


@dataclass(frozen=True)
class Wait:
    until: float | None


@dataclass(frozen=True)
class Done:
    pass


Action = Dial | Wait | Done


@dataclass
class _Row:
    row: int
    zone: tzinfo | None
    attempts: int = 0
    not_before: float = 0.0
    state: Literal["pending", "flight", "done"] = "pending"


@dataclass
class Scheduler:
    policy: Policy
    _rows: dict[int, _Row] = field(default_factory=dict)
    _last_dial: float | None = None
    _flight: int = 0
    stopped: bool = False

    def add(self, row: int, *, zone: tzinfo | None = None, attempts: int = 0, not_before: float = 0.0) -> None:
        """A row to dial (``attempts`` already made, in an earlier run; not before ``not_before``). Rows are
        considered in the order they are added (add them in file order)."""
        self._rows[row] = _Row(row, zone, attempts, not_before)

    def add_in_flight(self, row: int, *, zone: tzinfo | None = None, attempts: int = 1) -> None:
        """A row whose call was placed by an earlier run and is still being followed."""
        self._rows[row] = _Row(row, zone, attempts, state="flight")
        self._flight += 1

    @property
    def in_flight(self) -> int:
        return self._flight

    @property
    def pending(self) -> int:
        return sum(r.state == "pending" for r in self._rows.values())

    def stop(self) -> None:
        self.stopped = True

    def next(self, now: float) -> Action:
        flight = self._flight
        pending = (r for r in self._rows.values() if r.state == "pending")
        if self.stopped:
            return Wait(None) if flight else Done()
        if flight >= self.policy.concurrency:
            return Wait(None)
        spacing_ok_at = now if self._last_dial is None else self._last_dial + 1.0 / self.policy.cps
        earliest: float | None = None
        quiet_cache: dict[tuple[int, float], float] = {}
        for r in pending:
            ready = max(r.not_before, self._quiet_end(r, max(now, r.not_before), quiet_cache))
            if ready <= now:
                if spacing_ok_at > now:
                    return Wait(spacing_ok_at)
                r.state, r.attempts = "flight", r.attempts + 1
                self._last_dial = now
                self._flight += 1
                return Dial(r.row, r.attempts)
            earliest = ready if earliest is None else min(earliest, ready)
        if earliest is None:
            return Wait(None) if flight else Done()
        return Wait(max(earliest, spacing_ok_at))

    def _quiet_end(self, r: _Row, at: float, cache: dict[tuple[int, float], float]) -> float:
        """When ``r`` may be called, from ``at`` on, as far as quiet hours go (memoised per zone and instant)."""
        quiet = self.policy.quiet_hours
        if quiet is None or r.zone is None:
            return at
        key = (id(r.zone), at)
        if key not in cache:
            cache[key] = quiet.next_allowed(at, r.zone)
        return cache[key]

    def outcome(self, row: int, status: str, now: float) -> float | None:
        """The call of ``row`` ended with ``status``. Returns when it will be retried, or None (final)."""
        r = self._rows[row]
        assert r.state == "flight", f"row {row} is not in flight"
        self._flight -= 1
        if status in RETRYABLE and r.attempts <= self.policy.retries:
            r.state, r.not_before = "pending", now + self.policy.backoff(r.attempts)
            return r.not_before
        r.state = "done"
        return None

    def release(self, row: int, not_before: float) -> None:
        """The dial of ``row`` certainly placed no call: pending again, the attempt not counted."""
        r = self._rows[row]
        assert r.state == "flight", f"row {row} is not in flight"
        self._flight -= 1
        r.state, r.attempts, r.not_before = "pending", max(0, r.attempts - 1), not_before

    def attempts(self, row: int) -> int:
        return self._rows[row].attempts
