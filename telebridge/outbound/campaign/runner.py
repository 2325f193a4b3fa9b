"""The campaign loop: the scheduler's decisions carried out with asyncio, recorded in the state file.

``dial(contact) -> call_sid`` places one call (in production :func:`telebridge.outbound.calls.place_call`) and
``track(call_sid) -> CallOutcome`` follows it to its end (:class:`.tracking.RestTracker`); both are injected, so
tests can script them. :meth:`CampaignRunner.stop` (the first Ctrl-C) stops dialing and lets live calls finish;
cancelling :meth:`CampaignRunner.run` (the second) abandons them — they stay ``live`` in the state file and the
next run follows them by SID instead of redialing.

How a failed dial counts (``PlaceCallError.kind``):

* ``invalid_number`` / ``invalid_to`` — the row is ``invalid`` (final);
* ``claimed`` — another run of the same campaign claimed the row (shared through Redis): ``elsewhere`` (final
  here; that run dials it);
* ``permission`` or another 4xx refusal — ``error`` (final, with Twilio's message);
* ``credentials`` / ``invalid_from`` / ``config`` — the campaign stops (every row would fail the same way); the
  row is given back, no attempt used, since Twilio created no call;
* ``rate_limited`` — the row is given back and tried again a few seconds later;
* ``network``, a 5xx, anything else — ``unknown`` and the campaign stops: the call may have been placed, and at
  most once wins over at least once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from .contacts import Contact
from .quiet import contact_zone
from .scheduler import Dial, Done, Policy, Scheduler
from .state import CampaignState
from .tracking import CallOutcome

log = logging.getLogger("telebridge.campaign")

__all__ = ["CampaignRunner", "Progress"]

DialFn = Callable[[Contact], Awaitable[str]]
TrackFn = Callable[[str], Awaitable[CallOutcome]]
RATE_LIMIT_PAUSE = 5.0


class Progress:
    """What the runner reports; the CLI's subclass draws a tqdm bar. ``total`` rows, ``done`` of them final."""

    def start(self, total: int, done: Counter[str]) -> None: ...
    def finished(self, status: str) -> None: ...
    def live(self, count: int) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


@dataclass
class _Ended:
    outcome: CallOutcome
    stop: str | None = None  # stop the campaign, for this reason


@dataclass
class _Released:
    reason: str
    pause: float
    fatal: bool


class CampaignRunner:
    def __init__(self, contacts: list[Contact], state: CampaignState, policy: Policy, *, dial: DialFn,
                 track: TrackFn, timezone: str | None = None, clock: Callable[[], float] = time.time,
                 progress: Progress | None = None) -> None:
        self.contacts = contacts
        self.state = state
        self.policy = policy
        self.dial = dial
        self.track = track
        self.timezone = timezone
        self.clock = clock
        self.progress = progress or Progress()
        self.scheduler = Scheduler(policy)
        self.fatal: str | None = None  # why the campaign stopped early, if it did
        self._wake = asyncio.Event()
        self._tasks: dict[asyncio.Task[_Ended | _Released], Contact] = {}

    def stop(self, reason: str | None = None) -> None:
        """No more dials; live calls finish. Safe to call from a signal handler on the loop."""
        if reason and self.fatal is None:
            self.fatal = reason
        self.scheduler.stop()
        self._wake.set()

    def _zone(self, c: Contact) -> tzinfo | None:
        if self.policy.quiet_hours is None:
            return None
        return contact_zone(c.timezone, self.timezone, c.to)

    async def run(self) -> Counter[str]:
        """Dial until every row is final (or :meth:`stop`); returns the count of rows per status."""
        states = self.state.sync(self.contacts)
        by_row = {c.row: c for c in self.contacts}
        done: Counter[str] = Counter()
        for c in self.contacts:
            st = states[c.key]
            if st.status == "pending":
                self.scheduler.add(c.row, zone=self._zone(c), attempts=st.attempts, not_before=st.next_at)
            elif st.status == "live" and st.call_sid:
                self.scheduler.add_in_flight(c.row, zone=self._zone(c), attempts=max(st.attempts, 1))
                self._spawn(c, self._follow(st.call_sid))
            else:
                done[st.status] += 1
        self.progress.start(len(self.contacts), done)
        try:
            while True:
                action = self.scheduler.next(self.clock())
                if isinstance(action, Dial):
                    c = by_row[action.row]
                    self.state.dialing(c.key, action.attempt)  # before placing: at most once
                    self._spawn(c, self._attempt(c))
                    continue
                if isinstance(action, Done):
                    break
                timeout = None if action.until is None else max(0.0, action.until - self.clock())
                await self._wait(timeout)
        finally:
            await self._abandon()
        return Counter(s.status for s in self.state.states(self.contacts).values())

    def _spawn(self, c: Contact, coro: Awaitable[_Ended | _Released]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks[task] = c
        task.add_done_callback(lambda _t: self._wake.set())
        self.progress.live(len(self._tasks))

    async def _wait(self, timeout: float | None) -> None:
        self._wake.clear()
        if not any(t.done() for t in self._tasks):
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        for task in [t for t in self._tasks if t.done()]:
            self._settle(self._tasks.pop(task), task.result())
        self.progress.live(len(self._tasks))

    def _settle(self, c: Contact, result: _Ended | _Released) -> None:
        now = self.clock()
        if isinstance(result, _Released):
            self.scheduler.release(c.row, now + result.pause)
            self.state.released(c.key, self.scheduler.attempts(c.row), now + result.pause, result.reason)
            if result.fatal:
                self.stop(result.reason)
            return
        o = result.outcome
        retry_at = self.scheduler.outcome(c.row, o.status, now)
        self.state.ended(c.key, status=o.status, retry_at=retry_at, duration=o.duration, answered_by=o.answered_by,
                         ended_reason=o.ended_reason, summary=o.summary)
        if retry_at is None:
            self.progress.finished(o.status)
        if result.stop:
            self.stop(result.stop)

    async def _attempt(self, c: Contact) -> _Ended | _Released:
        assert c.to is not None
        try:
            sid = await self.dial(c)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is classified, none may kill the campaign loop
            return self._dial_failed(exc)
        self.state.live(c.key, sid)
        return await self._follow(sid)

    async def _follow(self, call_sid: str) -> _Ended:
        try:
            return _Ended(await self.track(call_sid))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            log.exception("call %s: following it failed", call_sid)
            return _Ended(CallOutcome(status="unknown", ended_reason=f"lost track of the call: {exc}"))

    def _dial_failed(self, exc: Exception) -> _Ended | _Released:
        kind, status = getattr(exc, "kind", None), getattr(exc, "status", None)
        message = " ".join(str(exc).split()) or type(exc).__name__
        if kind in ("invalid_number", "invalid_to"):
            return _Ended(CallOutcome(status="invalid", ended_reason=message))
        if kind == "claimed":  # another run of the same campaign has this row (REDIS_URL): it dials it
            return _Ended(CallOutcome(status="elsewhere", ended_reason=message))
        if kind in ("credentials", "invalid_from", "config"):
            return _Released(message, 0.0, fatal=True)
        if kind == "rate_limited":
            return _Released(message, RATE_LIMIT_PAUSE, fatal=False)
        if kind == "permission" or (kind == "twilio" and isinstance(status, int) and 400 <= status < 500):
            return _Ended(CallOutcome(status="error", ended_reason=message))
        if kind is None:
            log.error("placing a call failed unexpectedly: %r", exc)
        return _Ended(CallOutcome(status="unknown", ended_reason=f"dial failed: {message}"), stop=message)

    async def _abandon(self) -> None:
        """On cancellation (second Ctrl-C): stop following live calls; they stay open in the state file."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


def counts_line(counts: Counter[str] | dict[str, Any]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
