"""The console's live-call hub, sans-I/O: what every conversation is doing, the last calls, the last hour's figures.

Fed by :class:`~.feed.ConsoleFeed` (one per call, a conversation observer) and by the console's shell
(:mod:`.service`: calls opening and closing, level meters a few times a second). Every method takes the wall-clock
time ``now`` (Unix seconds) from its caller, so tests drive it with a synthetic clock.

Per live call: direction, masked number, agent, start time, turn state (``listening``, ``caller speaking``,
``thinking``, ``speaking``, ``paused``, then ``ending``), the transcript of both sides with barge-in, resume,
DTMF and ending markers, one latency row per answered turn (the stages :mod:`~telebridge.pipeline.call_metrics`
measures, plus ``heard``), a timeline and the level meters. Closed calls move to a bounded history.

Subscribers (the live feed) each get a bounded queue of events. A subscriber whose queue is full is dropped --
marked, told through its ``notify``, and forgotten -- so a slow browser never holds up a call or the hub; its
page reconnects and starts again from a snapshot. Level events replace the previous one still queued.

Every size is bounded: transcript entries, latency rows and timeline events per call (less once a call is in the
history: :meth:`LiveCall.compact`), calls in the history, latency samples per minute and the minutes kept (one
hour).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Any

from ..logs import mask_number, scrub
from .stats import MINUTES, MinuteBuckets

__all__ = ["ConsoleHub", "LiveCall", "Subscription", "STATES", "STAGES"]

STATES = ("listening", "caller speaking", "thinking", "speaking", "paused", "ending")
STAGES = ("endpointing", "stt", "llm_first_token", "tts_first_audio", "send", "total", "heard")
MAX_ENTRIES = 400  # transcript entries kept per call (the newest)
MAX_TURNS = 200  # latency rows kept per call
MAX_TIMELINE = 1000  # timeline events kept per call
MAX_TEXT = 2000  # characters of one transcript entry
# A call moving to the history keeps less (the history holds up to TELEBRIDGE_CONSOLE_HISTORY calls for hours):
HISTORY_ENTRIES = 200  # the newest transcript entries
HISTORY_TIMELINE = 200  # the newest timeline events
HISTORY_TEXT = 1000  # characters of one transcript entry
SUBSCRIBER_QUEUE = 2000  # events queued for one subscriber before it is dropped


def _clip(text: str) -> str:
    text = scrub(" ".join(str(text).split()))  # numbers a caller spoke are masked too
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


# --- subscribers --------------------------------------------------------------------------------------------------
class Subscription:
    """One subscriber's bounded queue. ``notify`` is called (synchronously) when events arrive or it is dropped."""

    def __init__(self, limit: int = SUBSCRIBER_QUEUE, notify: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.notify = notify or (lambda: None)
        self.queue: collections.deque[dict[str, Any]] = collections.deque()
        self.dropped = False

    def push(self, event: dict[str, Any]) -> bool:
        """Queue ``event``; False (and the subscription is dropped) when the queue is full."""
        if self.dropped:
            return False
        if event["type"] == "levels" and self.queue and self.queue[-1]["type"] == "levels":
            self.queue[-1] = event  # meters: only the newest reading matters
        elif len(self.queue) >= self.limit:
            self.dropped = True
            self.queue.clear()
            self.notify()
            return False
        else:
            self.queue.append(event)
        self.notify()
        return True

    def take(self) -> list[dict[str, Any]]:
        events = list(self.queue)
        self.queue.clear()
        return events


# --- one call -----------------------------------------------------------------------------------------------------
class LiveCall:
    """One conversation as the console shows it."""

    def __init__(self, call_id: str, *, transport: str, direction: str, number: str, agent: str,
                 started: float) -> None:
        self.id = call_id
        self.transport = transport
        self.direction = direction
        self.number = number
        self.agent = agent
        self.started = started
        self.ended: float | None = None
        self.outcome: str | None = None
        self.caller_speaking = False
        self.agent_phase = "idle"  # idle | thinking | speaking | paused
        self.ending = False
        self.entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_ENTRIES)
        self.latency: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_TURNS)
        self.timeline: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_TIMELINE)
        self.levels = (0.0, 0.0)
        self.turns = 0  # answered turns
        self._replies: dict[int, dict[str, Any]] = {}  # turn id -> its transcript entry, while it is open
        self._next_entry = 0

    @property
    def state(self) -> str:
        if self.ending:
            return "ending"
        if self.agent_phase == "paused":
            return "paused"
        if self.caller_speaking:
            return "caller speaking"
        if self.agent_phase in ("speaking", "thinking"):
            return self.agent_phase
        return "listening"

    def at(self, now: float) -> float:
        return round(max(0.0, now - self.started), 3)

    def entry(self, now: float, who: str, text: str, **extra: Any) -> dict[str, Any]:
        self._next_entry += 1
        item = {"id": self._next_entry, "t": self.at(now), "who": who, "text": _clip(text), **extra}
        self.entries.append(item)
        return item

    def summary(self, now: float | None = None) -> dict[str, Any]:
        end = self.ended if self.ended is not None else now
        return {
            "id": self.id, "transport": self.transport, "direction": self.direction, "number": self.number,
            "agent": self.agent, "started": round(self.started, 3), "state": self.state if self.ended is None else "ended",
            "duration": _r(None if end is None else max(0.0, end - self.started), 1), "turns": self.turns,
            "outcome": self.outcome, "live": self.ended is None,
        }

    def compact(self) -> None:
        """Shrink a finished call to its history size (:data:`HISTORY_ENTRIES`, :data:`HISTORY_TIMELINE`,
        :data:`HISTORY_TEXT`): a long call's record must not weigh hundreds of kB for as long as it is listed."""
        def short(item: dict[str, Any]) -> dict[str, Any]:  # a copy: a queued event may still hold the entry
            text = item.get("text")
            if isinstance(text, str) and len(text) > HISTORY_TEXT:
                return {**item, "text": text[: HISTORY_TEXT - 1] + "…"}
            return item

        self.entries = collections.deque((short(i) for i in list(self.entries)[-HISTORY_ENTRIES:]),
                                         maxlen=HISTORY_ENTRIES)
        self.timeline = collections.deque(self.timeline, maxlen=HISTORY_TIMELINE)
        self._replies.clear()

    def detail(self, now: float | None = None) -> dict[str, Any]:
        return {**self.summary(now), "transcript": list(self.entries), "latency": list(self.latency),
                "timeline": list(self.timeline), "source": "live" if self.ended is None else "history"}


# --- the hub ------------------------------------------------------------------------------------------------------
class ConsoleHub:
    def __init__(self, *, history: int = 200, minutes: int = MINUTES) -> None:
        self.live: dict[str, LiveCall] = {}
        self.history: collections.deque[LiveCall] = collections.deque(maxlen=max(1, history))
        self.buckets = MinuteBuckets(minutes)
        self.subscribers: list[Subscription] = []

    # --- subscribers ----------------------------------------------------------------------------------------
    def subscribe(self, notify: Callable[[], None] | None = None, limit: int = SUBSCRIBER_QUEUE) -> Subscription:
        sub = Subscription(limit, notify)
        self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)

    def publish(self, event: dict[str, Any]) -> None:
        for sub in list(self.subscribers):
            if not sub.push(event):
                self.unsubscribe(sub)

    # --- reading --------------------------------------------------------------------------------------------
    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything the page shows at once: live calls in detail, the history's summaries, the charts."""
        return {"now": round(now, 3), "live": [c.detail(now) for c in self.live.values()],
                "past": [c.summary() for c in reversed(self.history)], "stats": self.stats(now)}

    def find(self, call_id: str) -> LiveCall | None:
        call = self.live.get(call_id)
        if call is not None:
            return call
        return next((c for c in self.history if c.id == call_id), None)

    def stats(self, now: float) -> list[dict[str, Any]]:
        return self.buckets.series(now)

    # --- calls opening and closing --------------------------------------------------------------------------
    def open(self, call_id: str, now: float, *, transport: str = "phone", direction: str = "inbound",
             number: str | None = None, agent: str = "") -> LiveCall:
        call = LiveCall(call_id, transport=transport, direction=direction, number=mask_number(number), agent=agent,
                        started=now)
        self.live[call_id] = call
        self.buckets.calls(len(self.live), now)
        self._mark(call, now, "started", "")
        self.publish({"type": "call", "call": call.detail(now)})
        return call

    def close(self, call_id: str, now: float, outcome: str) -> None:
        call = self.live.pop(call_id, None)
        if call is None:
            return
        self.buckets.calls(len(self.live), now)
        call.ended, call.outcome = now, outcome
        call.caller_speaking, call.agent_phase, call.ending = False, "idle", False
        self._mark(call, now, "ended", outcome)
        for entry in call._replies.values():  # a reply still open when the line went dead
            entry["state"] = "cut"
        call.compact()
        self.history.append(call)
        self.publish({"type": "ended", "call": call.summary()})

    # --- the conversation (from the call's observer) --------------------------------------------------------
    def speech_started(self, call_id: str, now: float) -> None:
        if call := self.live.get(call_id):
            call.caller_speaking = True
            self._mark(call, now, "caller_start", "")
            self._publish_state(call, now)

    def speech_stopped(self, call_id: str, now: float) -> None:
        if call := self.live.get(call_id):
            call.caller_speaking = False
            self._mark(call, now, "caller_stop", "")
            self._publish_state(call, now)

    def caller_said(self, call_id: str, now: float, text: str) -> None:
        call = self.live.get(call_id)
        if call is not None and text.strip():
            self._publish_entry(call, call.entry(now, "caller", text))

    def reply_started(self, call_id: str, now: float, turn: int) -> None:
        call = self.live.get(call_id)
        if call is None:
            return
        call._replies[turn] = call.entry(now, "agent", "", turn=turn, state="thinking")
        if call.agent_phase != "paused":
            call.agent_phase = "thinking"
        self._mark(call, now, "reply_start", str(turn))
        self._publish_entry(call, call._replies[turn])
        self._publish_state(call, now)

    def reply_text(self, call_id: str, now: float, turn: int, text: str) -> None:
        call = self.live.get(call_id)
        entry = call._replies.get(turn) if call is not None else None
        if call is not None and entry is not None:
            joined = (entry["text"] + " " + _clip(text)).strip()  # only the new sentence needs masking
            entry["text"] = joined if len(joined) <= MAX_TEXT else joined[: MAX_TEXT - 1] + "…"
            self._publish_entry(call, entry)

    def reply_audible(self, call_id: str, now: float, turn: int, latency: dict[str, float] | None) -> None:
        call = self.live.get(call_id)
        if call is None:
            return
        entry = call._replies.get(turn)
        if entry is not None:
            entry["state"] = "speaking"
            self._publish_entry(call, entry)
        call.agent_phase = "speaking"
        self._mark(call, now, "agent_start", str(turn))
        if latency is not None:
            call.turns += 1
            row = {"turn": turn, "t": call.at(now), **{k: _r(latency.get(k)) for k in STAGES if k != "heard"},
                   "heard": None}
            call.latency.append(row)
            self.publish({"type": "latency", "call_id": call.id, "row": dict(row)})
        self._publish_state(call, now)

    def reply_heard(self, call_id: str, now: float, turn: int, total: float) -> None:
        call = self.live.get(call_id)
        row = next((r for r in reversed(call.latency) if r["turn"] == turn), None) if call is not None else None
        if call is None or row is None or row["heard"] is not None:
            return
        row["heard"] = _r(total)
        self.buckets.latency(total, now)
        self.publish({"type": "latency", "call_id": call.id, "row": dict(row)})

    def reply_done(self, call_id: str, now: float, turn: int, text: str) -> None:
        self._reply_over(call_id, now, turn, text, "done")

    def reply_interrupted(self, call_id: str, now: float, turn: int, heard_text: str) -> None:
        call = self._reply_over(call_id, now, turn, heard_text, "cut")
        if call is not None:
            self._marker(call, now, "barge_in", "the caller barged in")

    def reply_dropped(self, call_id: str, now: float, turn: int) -> None:
        call = self.live.get(call_id)
        entry = call._replies.pop(turn, None) if call is not None else None
        if call is None or entry is None:
            return
        if entry in call.entries:
            call.entries.remove(entry)
        self.publish({"type": "entry_removed", "call_id": call.id, "id": entry["id"]})
        if not call._replies and call.agent_phase != "paused":
            call.agent_phase = "idle"
        self._publish_state(call, now)

    def reply_paused(self, call_id: str, now: float, turn: int) -> None:
        if call := self.live.get(call_id):
            call.agent_phase = "paused"
            self._marker(call, now, "paused", "caller speech over the agent: paused")
            self._publish_state(call, now)

    def reply_resumed(self, call_id: str, now: float, turn: int) -> None:
        if call := self.live.get(call_id):
            call.agent_phase = "speaking"
            self._marker(call, now, "resumed", "not an interruption: the agent resumed")
            self._publish_state(call, now)

    def dtmf(self, call_id: str, now: float, digit: str) -> None:
        if call := self.live.get(call_id):
            self._marker(call, now, "dtmf", f"key {digit[:1]}")

    def ending(self, call_id: str, now: float, reason: str) -> None:
        if call := self.live.get(call_id):
            call.ending = True
            self._marker(call, now, "ending", f"call ending: {reason}")
            self._publish_state(call, now)

    def note(self, call_id: str, now: float, text: str) -> None:
        """An operator's action (hang-up, transfer) in the call's transcript."""
        if call := self.live.get(call_id):
            self._marker(call, now, "operator", text)

    def levels(self, now: float, levels: dict[str, tuple[float, float]]) -> None:
        """Level meters (RMS 0..1, caller and agent) of the live calls named, published as one event."""
        out = {}
        for call_id, (caller, agent) in levels.items():
            call = self.live.get(call_id)
            if call is not None:
                call.levels = (_r(caller, 4) or 0.0, _r(agent, 4) or 0.0)
                out[call_id] = list(call.levels)
        if out:
            self.publish({"type": "levels", "levels": out})

    # --- inside -----------------------------------------------------------------------------------------------
    def _reply_over(self, call_id: str, now: float, turn: int, text: str, state: str) -> LiveCall | None:
        call = self.live.get(call_id)
        if call is None:
            return None
        entry = call._replies.pop(turn, None)
        if entry is not None:
            entry["text"], entry["state"] = _clip(text), state
            self._publish_entry(call, entry)
        if not call._replies:
            call.agent_phase = "idle"
        self._mark(call, now, "agent_stop", f"{turn}:{state}")
        self._publish_state(call, now)
        return call

    def _marker(self, call: LiveCall, now: float, kind: str, text: str) -> None:
        self._mark(call, now, kind, text)
        self._publish_entry(call, call.entry(now, "event", text, kind=kind))

    def _mark(self, call: LiveCall, now: float, kind: str, detail: str) -> None:
        mark = {"t": call.at(now), "kind": kind, "detail": detail}
        call.timeline.append(mark)
        if self.subscribers and kind not in ("started", "ended"):  # those two come with the call's own events
            self.publish({"type": "mark", "call_id": call.id, "mark": mark})

    def _publish_entry(self, call: LiveCall, entry: dict[str, Any]) -> None:
        if self.subscribers:
            self.publish({"type": "entry", "call_id": call.id, "entry": dict(entry)})

    def _publish_state(self, call: LiveCall, now: float) -> None:
        if self.subscribers:
            self.publish({"type": "state", "call_id": call.id, "state": call.state, "turns": call.turns})
