"""Turns not made of speech: keypad digits and a realtime client's commit, reply request and cancel (sans-I/O).

:class:`ClientTurns` is a mixin of :class:`~.turns.TurnEngine` (``self`` is the engine, whose state it reads and
changes: ``_digits``, ``_committed``, ``reply_turn`` ...). The rules are in :mod:`.turns`' table: digits gather
until the terminator or ``dtmf_inter_digit_timeout`` and join the caller's turn as one user message,
``dtmf_interrupt_digit`` stops the agent at once; ``commit`` ends the turn with no endpointing wait,
``request_reply`` answers now (or once the words are in), ``cancel`` stops the reply like a barge-in.
"""

from __future__ import annotations

from .turn_actions import DTMF_MESSAGE, Action, CancelReply, State
from .turn_idle import turn_input


class ClientTurns:
    """Keypad and client-driven inputs of :class:`~.turns.TurnEngine` (a mixin)."""

    @turn_input
    def dtmf(self, digit: str, t: float) -> list[Action]:
        if self.state is State.ENDED or self._ending is not None:
            return []
        self._quiet_since = t
        if digit == self.params.dtmf_interrupt_digit:
            if self.state in (State.SPEAKING, State.PAUSED):
                return self._interrupt()
            if self.state is State.THINKING and self.reply_turn is not None:
                turn = self.reply_turn
                self._clear_reply()
                self.state = State.LISTENING
                return [CancelReply(turn)]
            return []
        if digit == self.params.dtmf_terminator and self._digits:
            return self._flush_digits(t) + self.tick(t)
        self._digits.append(digit)
        self._digit_at = t
        return []

    # --- turns driven by the client (OpenAI Realtime: input_audio_buffer.commit, response.create/.cancel) --
    @turn_input
    def commit(self, t: float) -> list[Action]:
        """The user's turn is over: it is answered as soon as its words are transcribed (no endpointing wait)."""
        if self.state is State.ENDED:
            return []
        self._committed = True
        return self.tick(t)

    @turn_input
    def request_reply(self, t: float) -> list[Action]:
        """Reply now, or as soon as the user's words are transcribed; nothing while a reply is under way."""
        if self.state is State.ENDED or self._ending is not None or self._greeting is not None:
            return []
        if self.reply_turn is not None:
            return []
        self._committed = self._reply_requested = True
        return self.tick(t)

    @turn_input
    def cancel(self, t: float) -> list[Action]:
        """Stop the reply under way: cut off where the user stopped hearing it, or dropped if nothing was heard."""
        if self.reply_turn is None or self.state is State.ENDED or self._ending is not None:
            return []
        if self.state in (State.SPEAKING, State.PAUSED):
            return self._interrupt()
        turn = self.reply_turn
        self._clear_reply()
        self._quiet_since = t
        self.state = State.USER_SPEAKING if self._utt is not None else State.LISTENING
        return [CancelReply(turn)]

    def _flush_digits(self, t: float) -> list[Action]:
        digits = "".join(self._digits)
        self._digits.clear()
        self._pending_text.append(DTMF_MESSAGE.format(digits=digits))
        self._voice_end = t - self.endpoint_delay  # a key press needs no endpointing wait
        return []
