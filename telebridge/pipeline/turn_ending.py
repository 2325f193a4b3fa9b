"""How a call winds down: the turn engine's rules for ending (a mixin of :class:`~.turns.TurnEngine`).

* **Winding down** (silence, max duration, ``end_call``, ``transfer_call``): no more turns and no barge-in; a
  paused reply resumes; the current reply finishes, the goodbye plays (always, or only if the agent said
  nothing, per request), then one :class:`HangUp` or :class:`Transfer`, and the engine is ENDED: silent forever.
"""

from __future__ import annotations

from dataclasses import dataclass

from .turn_actions import Action, HangUp, State, Transfer
from .turn_idle import turn_input


@dataclass(slots=True)
class _Ending:
    reason: str
    say: str | None
    only_if_silent: bool
    transfer_to: str | None
    deadline: float  # say the goodbye by then even if the caller keeps talking
    waiting_for: int | None  # the reply that must finish first
    spoke: bool = False  # that reply was heard
    goodbye_turn: int | None = None


class EndingTurns:
    """The winding-down half of :class:`~.turns.TurnEngine` (a mixin: ``self`` is the engine, whose state it
    reads and changes: ``_ending``, ``state``, ``reply_turn`` …)."""

    @turn_input
    def request_end(
        self,
        t: float,
        reason: str,
        *,
        say: str | None,
        only_if_silent: bool = False,
        transfer_to: str | None = None,
    ) -> list[Action]:
        """Wind the call down: let the current reply finish, say ``say`` (maybe), then hang up or transfer."""
        if self.state is State.ENDED or self._ending is not None:
            return []
        self._ending = _Ending(
            reason, say, only_if_silent, transfer_to, deadline=t + self.params.ending_grace,
            waiting_for=self.reply_turn, spoke=self.reply_audible,
        )
        actions: list[Action] = []
        if self.state is State.PAUSED and self.reply_turn is not None:
            actions += self._resume()
        return actions + self.tick(t)

    def _tick_ending(self, t: float) -> list[Action]:
        ending = self._ending
        assert ending is not None
        if ending.waiting_for is not None or ending.goodbye_turn is not None or self.reply_turn is not None:
            return []  # a reply (the last answer or the goodbye) is still playing
        if self._utt is not None and t < ending.deadline:
            return []  # let the caller finish their sentence first
        say = ending.say
        if say and not (ending.only_if_silent and ending.spoke):
            reply = self.start_reply("", say=say, kind="goodbye")
            ending.goodbye_turn = reply.turn_id
            return [reply]
        return self._final_action()

    def _final_action(self) -> list[Action]:
        ending = self._ending
        assert ending is not None
        self.state = State.ENDED
        self._clear_reply()
        if ending.transfer_to is not None:
            return [Transfer(ending.transfer_to, ending.reason)]
        return [HangUp(ending.reason)]
