"""When the caller's turn ends: the turn engine's endpointing rules (a mixin of :class:`~.turns.TurnEngine`).

* **Endpointing.** The silence a turn needs after the caller's last speech (:meth:`EndpointTurns._endpoint_wait`):
  words that look unfinished (:mod:`.unfinished`) always wait ``max_endpointing_delay``; else the end-of-turn
  model's answer on this pause, when there is one (:meth:`EndpointTurns.turn_verdict`), decides; else the fixed
  endpointing delay.
* **When the model is asked** (:attr:`EndpointTurns.awaiting_turn_end`): while the caller holds the floor and
  nothing answers them yet, and not about the pause in which they barged in.
"""

from __future__ import annotations

from .turn_actions import State
from .turn_idle import turn_input
from .unfinished import turn_looks_unfinished

SURE_AFTER_A_HESITATION = 0.8  # the model's probability that ends a turn whose earlier words stopped mid-thought


class EndpointTurns:
    """The endpointing half of :class:`~.turns.TurnEngine` (a mixin: ``self`` is the engine, whose state it reads
    and changes: ``_verdict``, ``_voice_end``, ``_utt``, ``_barge`` …)."""

    @turn_input
    def turn_verdict(self, voice_end: float, complete: bool, probability: float | None = None) -> None:
        """The end-of-turn model's answer about the pause after the caller's speech that ended at ``voice_end``
        (ignored once the caller has spoken again); ``probability``: how sure it was that they had finished."""
        self._verdict = (voice_end, complete, (1.0 if complete else 0.0) if probability is None else probability)

    @property
    def awaiting_turn_end(self) -> bool:
        """The caller holds the floor and nothing answers them yet: the moment an end-of-turn model is asked."""
        return (self.state in (State.USER_SPEAKING, State.LISTENING) and self.reply_turn is None
                and self._greeting is None and self._ending is None and not self._pause_of_barge_in)

    @property
    def _pause_of_barge_in(self) -> bool:
        """The caller is silent in a pause that began while the agent was still talking (the interruption came
        in it): they paused over the agent's voice, not after hearing it stop -- no end of their turn to ask a
        model about ("Sorry, | can you stop"); the VAD's endpointing still ends it if nothing follows."""
        utt = self._utt
        return utt is not None and self._barge == (utt.uid, utt.voiced_until)

    def _endpoint_wait(self, parts: list[str]) -> float:
        """Silence after the caller's last speech before their turn ends. Words that look unfinished always wait
        longest; otherwise the end-of-turn model's answer on this pause, when there is one, decides: complete →
        no wait beyond the words; incomplete → the longest wait; no answer → the fixed endpointing delay.
        A turn whose earlier words stopped mid-thought ("I'd like." …) needs the model to be sure
        (:data:`SURE_AFTER_A_HESITATION`) of the words that followed: Whisper makes words of an "um" and the model
        hears a finished sentence in them at 0.5-0.7 (the shortest, "2." or "to you.", the words rules catch
        whatever the model says: it said 0.90 for "to you.")."""
        longest = max(self.params.max_endpointing_delay, self.endpoint_delay)
        if turn_looks_unfinished(parts):
            return longest
        verdict = self._verdict
        if verdict is not None and verdict[0] == self._voice_end:
            _, complete, probability = verdict
            if complete and len(parts) > 1 and probability < SURE_AFTER_A_HESITATION \
                    and turn_looks_unfinished(parts[:-1]):
                complete = False
            return 0.0 if complete else longest
        return self.endpoint_delay
