"""Who speaks first on a call, and what happens when a machine answers: the greeting and answering-machine
rules of the turn engine (:class:`~.turns.TurnEngine` inherits :class:`GreetingTurns`; the state is the
engine's).

* **Who speaks first.** ``greet(wait_for_callee=True)`` (outbound calls by default) holds the greeting until the
  callee's first utterance has ended (their "hello"; its words are not answered, the greeting is the answer) or
  ``timeout`` passes in silence. A callee still talking at the timeout is let finish, but never beyond
  ``greeting_max_wait``. With ``hold_long_greeting`` (AMD requested) a first utterance longer than
  ``machine_greeting_seconds`` sounds like a recorded greeting: the engine waits for the verdict instead (again
  at most ``greeting_max_wait``). Nothing else happens before the greeting: no replies, no check-ins.
* **Answering machines.** ``answering_machine(t, message)`` drops whatever the agent was saying or about to say
  and winds down: the machine's greeting is let finish, ``message`` is left (if any), then :class:`HangUp`
  (reason ``voicemail`` or ``answering_machine``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .turn_actions import Action, CancelReply, State
from .turn_idle import turn_input


@dataclass(slots=True)
class PendingGreeting:
    text: str
    deadline: float  # greet by then if the callee has not spoken
    hard_deadline: float  # greet by then whatever the callee does
    hold_long: bool  # a long first utterance waits for the AMD verdict
    callee_spoke: bool = False
    hold: bool = False


class GreetingTurns:
    """The greeting and answering-machine half of :class:`~.turns.TurnEngine` (a mixin: ``self`` is the engine,
    whose state it reads and changes: ``_greeting``, ``state``, ``reply_turn`` …)."""

    @property
    def greeting_pending(self) -> bool:
        return self._greeting is not None

    @turn_input
    def greet(
        self, text: str, t: float = 0.0, *, wait_for_callee: bool = False, timeout: float = 3.0,
        hold_long_greeting: bool = False,
    ) -> list[Action]:
        """Say ``text`` now, or (``wait_for_callee``) once the callee has said hello or ``timeout`` passed."""
        if self.state is State.ENDED:
            return []
        if wait_for_callee:
            self._greeting = PendingGreeting(text, t + timeout, t + timeout + self.params.greeting_max_wait,
                                              hold_long_greeting)
            return self.tick(t)
        return [self.start_reply("", say=text, kind="greeting")]

    @turn_input
    def callee_is_human(self, t: float) -> list[Action]:
        """AMD says a person answered: a greeting held for the verdict goes out (once they stop talking)."""
        if self._greeting is not None:
            self._greeting.hold = False
            self._greeting.hold_long = False
        return self.tick(t)

    @turn_input
    def answering_machine(self, t: float, message: str | None) -> list[Action]:
        """A machine answered: stop (or drop) the agent's speech, let the greeting finish, leave ``message``
        (if any), hang up."""
        if self.state is State.ENDED or self._ending is not None:
            return []
        self._greeting = None
        self._pending_text.clear()
        actions: list[Action] = []
        if self.reply_turn is not None:
            if self.state in (State.SPEAKING, State.PAUSED):
                actions += self._interrupt()
            else:
                actions.append(CancelReply(self.reply_turn))
                self._clear_reply()
                self.state = State.USER_SPEAKING if self._utt is not None else State.LISTENING
        reason = "voicemail" if message else "answering_machine"
        return actions + self.request_end(t, reason, say=message)

    def _greeting_due(self, greeting: PendingGreeting, t: float) -> bool:
        if t >= greeting.hard_deadline:
            return True
        if self._utt is not None or greeting.hold or self.state is not State.LISTENING:
            return False
        return greeting.callee_spoke or t >= greeting.deadline
