"""The console's asyncio shell: the hub, wired to the runtime's calls; the level-meter sampler; hang-up and transfer.

One :class:`Console` per process (``runtime.console``). The runtime tells it when a conversation is registered
and unregistered; it attaches a :class:`~.feed.ConsoleFeed` to each. While someone watches (a live feed is open),
one task reads every live call's level meters :data:`LEVELS_EVERY` seconds and the charts' figures every
:data:`STATS_EVERY` seconds; it ends when the last watcher leaves, and with the runtime.

Several worker processes: each has its own console, showing its own calls (see README "Console").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..logs import mask_number
from ..metrics import call_outcome
from ..pipeline.observer import Observers
from .feed import ConsoleFeed
from .hub import ConsoleHub, Subscription
from .listen import Listener, ListenTap

log = logging.getLogger("telebridge.console")

__all__ = ["Console", "ActionError", "LEVELS_EVERY", "STATS_EVERY"]

LEVELS_EVERY = 0.2  # seconds between level-meter readings (5 Hz)
STATS_EVERY = 5.0  # seconds between chart updates


class ActionError(Exception):
    """A hang-up or transfer that cannot be done; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Watcher:
    subscription: Subscription
    wake: asyncio.Event


class Console:
    def __init__(self, calls: Mapping[str, Any], *, history: int = 200,
                 clock: Callable[[], float] = time.time) -> None:
        self.calls = calls  # the runtime's live calls, by id
        self.hub = ConsoleHub(history=history)
        self.clock = clock
        self._sampler: asyncio.Task | None = None
        self.closed = False
        self.taps: dict[str, ListenTap] = {}  # live phone calls recorded with consent: listen-in

    # --- the runtime's calls --------------------------------------------------------------------------------
    def call_started(self, call: Any) -> None:
        """A conversation was registered (before it starts): show it, and watch it."""
        try:
            data = getattr(call, "custom_data", None) or {}
            realtime = data.get("transport") == "realtime"
            outbound = str(data.get("Direction") or "").startswith("outbound")
            number = None if realtime else data.get("To" if outbound else "From")
            self.hub.open(call.call_id, self.clock(), transport="realtime" if realtime else "phone",
                          direction="outbound" if outbound else "inbound", number=number,
                          agent=str(getattr(call.agent, "id", "") or ""))
            call.observer = Observers(call.observer, ConsoleFeed(self.hub, call.call_id, self.clock))
        except Exception:  # the console must never cost a call
            log.exception("console: cannot follow call %s", getattr(call, "call_id", "?"))

    def call_ended(self, call: Any) -> None:
        try:
            self.hub.close(call.call_id, self.clock(), call_outcome(call))
        except Exception:
            log.exception("console: cannot close call %s", getattr(call, "call_id", "?"))

    # --- listening in ---------------------------------------------------------------------------------------
    def open_tap(self, call_id: str, consent: Callable[[], bool]) -> ListenTap:
        """A phone call that may be recorded: its audio can reach the console while ``consent()`` holds."""
        tap = self.taps[call_id] = ListenTap(consent)
        return tap

    def close_tap(self, call_id: str) -> None:
        tap = self.taps.pop(call_id, None)
        if tap is not None:
            tap.close()

    def listenable(self, call_id: str) -> bool:
        tap = self.taps.get(call_id)
        return tap is not None and tap.allowed

    def listen(self, call_id: str) -> tuple[ListenTap, Listener]:
        """An operator starts listening; :class:`ActionError` unless the call is live and recorded with consent."""
        tap = self.taps.get(call_id)
        if call_id not in self.hub.live:
            raise ActionError(404, "not_live", "there is no live call with that id (it may have ended)")
        listener = tap.listen() if tap is not None else None
        if tap is None or listener is None:
            raise ActionError(403, "not_recorded", "listening in is only possible while the call is recorded with "
                              "the caller's consent (TELEBRIDGE_RECORDINGS_DIR and the agent's allow_recording)")
        log.info("call %s: an operator is listening in", call_id)
        self.hub.note(call_id, self.clock(), "an operator started listening in")
        return tap, listener

    # --- watchers (the live feed) ---------------------------------------------------------------------------
    def watch(self) -> Watcher:
        wake = asyncio.Event()
        watcher = Watcher(self.hub.subscribe(notify=wake.set), wake)
        if self.closed:
            watcher.subscription.dropped = True
            wake.set()
        elif self._sampler is None or self._sampler.done():
            self._sampler = asyncio.get_running_loop().create_task(self._sample(), name="console-sampler")
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.hub.unsubscribe(watcher.subscription)

    async def _sample(self) -> None:
        last_stats = 0.0
        while self.hub.subscribers and not self.closed:
            now = self.clock()
            levels = {}
            for call_id in list(self.hub.live):
                call = self.calls.get(call_id)
                if call is not None:
                    try:
                        levels[call_id] = call.levels()
                    except Exception:  # a call still setting up, or one ending: no reading this time
                        pass
            self.hub.levels(now, levels)
            if now - last_stats >= STATS_EVERY:
                last_stats = now
                self.hub.publish({"type": "stats", "stats": self.hub.stats(now)})
            await asyncio.sleep(LEVELS_EVERY)

    async def aclose(self) -> None:
        """The runtime stops: end every live feed and the sampler."""
        self.closed = True
        for sub in list(self.hub.subscribers):
            sub.dropped = True
            sub.notify()
        self.hub.subscribers.clear()
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)

    # --- an operator's actions ------------------------------------------------------------------------------
    def _live(self, call_id: str) -> Any:
        call = self.calls.get(call_id)
        if call is None or call_id not in self.hub.live:
            raise ActionError(404, "not_live", "there is no live call with that id (it may have ended)")
        return call

    def hang_up(self, call_id: str) -> None:
        """End a live call now: a phone call through Twilio's REST API (as the agent's end_call does), a realtime
        session by closing it. Returns at once; the call leaves the live list when it is over."""
        call = self._live(call_id)
        log.info("call %s: hang-up requested from the console", call_id)
        self.hub.note(call_id, self.clock(), "hang-up requested from the console")
        call.ending.hang_up_now("console_hangup")

    async def transfer(self, call_id: str, target: str) -> None:
        """Transfer a live phone call to ``target`` (E.164, already validated). Raises :class:`ActionError`."""
        call = self._live(call_id)
        if (getattr(call, "custom_data", None) or {}).get("transport") == "realtime":
            raise ActionError(409, "not_a_phone_call", "a realtime session cannot be transferred: it is not a phone call")
        if call.ending.control is None:
            raise ActionError(409, "no_call_control", "this call cannot be transferred: no Twilio credentials for it "
                              "(TWILIO_AUTH_TOKEN), or its agent is still starting")
        masked = mask_number(target)
        log.info("call %s: transfer to %s requested from the console", call_id, masked)
        self.hub.note(call_id, self.clock(), f"transfer to {masked} requested from the console")
        if not await call.ending.transfer_now(target, "console_transfer"):
            self.hub.note(call_id, self.clock(), f"transfer to {masked} failed: Twilio refused it")
            raise ActionError(502, "transfer_failed", "Twilio refused the transfer (see the server log); the call "
                              "goes on")
