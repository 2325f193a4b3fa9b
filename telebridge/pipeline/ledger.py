"""The mark ledger: what the caller has actually heard.

Theory of operation
-------------------
Twilio plays the media we send in order and echoes a ``mark`` when playback reaches it. Every outbound chunk is
followed by a mark named after its reply ("turn") and the audio offset where the chunk ends, so an echo tells us
exactly how much of *that* reply has been played. Counting echoes instead of naming them is the classic bug:
``clear`` makes Twilio echo every pending mark at once, and those flushed echoes would be credited to the next
reply.

Rules, all in this file:

* ``sent(turn, end_offset)`` records a pending mark and returns its unique name.
* ``clear()`` records that we asked Twilio to flush. Every mark still pending at that moment is *flushed*: its
  echo (which Twilio sends right away) is accounted as flushed, never as played.
* An echo of a pending, unflushed mark means playback reached it: the turn's heard position advances to its
  offset. Because Twilio plays in order, every earlier pending mark of the same turn was played too.
* Echoes of unknown names (another process's, or duplicates) are reported and ignored.

No I/O and no clock: the asyncio shell feeds it what it sends and receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Echo(Enum):
    PLAYED = "played"
    FLUSHED = "flushed"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class _Turn:
    turn_id: int
    sent_offset: int = 0  # samples handed to Twilio for this turn
    heard_offset: int = 0  # samples the caller has heard
    pending: dict[str, int] = field(default_factory=dict)  # mark name -> end offset (insertion order = send order)
    flushed: set[str] = field(default_factory=set)
    closed: bool = False  # no more audio will be sent for this turn


@dataclass(frozen=True, slots=True)
class EchoResult:
    outcome: Echo
    turn_id: int | None = None
    heard_offset: int = 0
    turn_finished: bool = False  # the turn is closed and every mark has come back


class MarkLedger:
    def __init__(self) -> None:
        self._turns: dict[int, _Turn] = {}
        self._owner: dict[str, int] = {}
        self.flushed_echoes = 0
        self.unknown_echoes = 0

    def _turn(self, turn_id: int) -> _Turn:
        turn = self._turns.get(turn_id)
        if turn is None:
            turn = self._turns[turn_id] = _Turn(turn_id)
        return turn

    def sent(self, turn_id: int, n_samples: int) -> str:
        """Record that ``n_samples`` more of ``turn_id`` were sent; returns the mark name to send after them."""
        turn = self._turn(turn_id)
        turn.sent_offset += n_samples
        name = f"t{turn_id}-{turn.sent_offset}"
        turn.pending[name] = turn.sent_offset
        self._owner[name] = turn_id
        return name

    def close_turn(self, turn_id: int) -> bool:
        """No more audio will follow for this turn. Returns True if it has already fully played."""
        turn = self._turn(turn_id)
        turn.closed = True
        return not turn.pending

    def clear(self) -> list[int]:
        """We sent ``clear``: everything pending is flushed. Returns the turns that lost unplayed audio."""
        affected = []
        for turn in self._turns.values():
            if turn.pending:
                affected.append(turn.turn_id)
                turn.flushed.update(turn.pending)
                turn.pending.clear()
        return affected

    def echoed(self, name: str) -> EchoResult:
        turn_id = self._owner.pop(name, None)
        if turn_id is None or turn_id not in self._turns:
            self.unknown_echoes += 1
            return EchoResult(Echo.UNKNOWN)
        turn = self._turns[turn_id]
        if name in turn.flushed:
            turn.flushed.discard(name)
            self.flushed_echoes += 1
            return EchoResult(Echo.FLUSHED, turn_id, turn.heard_offset, self._finished(turn))
        offset = turn.pending.get(name)
        if offset is None:
            self.unknown_echoes += 1
            return EchoResult(Echo.UNKNOWN, turn_id, turn.heard_offset)
        # Twilio plays in order: everything sent before this mark has been played as well.
        for earlier in list(turn.pending):
            del turn.pending[earlier]
            self._owner.pop(earlier, None)
            if earlier == name:
                break
        turn.heard_offset = max(turn.heard_offset, offset)
        return EchoResult(Echo.PLAYED, turn_id, turn.heard_offset, self._finished(turn))

    @staticmethod
    def _finished(turn: _Turn) -> bool:
        return turn.closed and not turn.pending

    def heard(self, turn_id: int) -> int:
        turn = self._turns.get(turn_id)
        return turn.heard_offset if turn else 0

    def sent_samples(self, turn_id: int) -> int:
        turn = self._turns.get(turn_id)
        return turn.sent_offset if turn else 0

    def playing(self, turn_id: int) -> bool:
        """True while some of the turn's audio is still queued at Twilio's side."""
        turn = self._turns.get(turn_id)
        return bool(turn and turn.pending)

    def forget(self, turn_id: int) -> None:
        """Drop bookkeeping of a finished turn (late flushed echoes then count as unknown)."""
        turn = self._turns.pop(turn_id, None)
        if turn:
            for name in list(turn.pending) + list(turn.flushed):
                self._owner.pop(name, None)
