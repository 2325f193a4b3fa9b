"""The turn engine's quiet spells: when nothing but a timer can make ``tick`` act (sans-I/O).

Most of a call is two silent sides, or the agent talking to a silent caller: no utterance open, no words
pending, no keys, no greeting or goodbye under way. The shell ticks the engine on every 32 ms VAD window all
the same, and in that state :meth:`~.turns.TurnEngine.tick` acts only once a timer is due (``max_call_duration``;
with no reply in flight, the silence check-in ``silence_timeout``). When a tick finds the engine so,
:class:`IdleTurns` notes until when nothing can happen (``_idle_until``) and the ticks before then return at once
(``[]``, as the full tick would). Any input -- every public method that changes the engine is marked
:func:`turn_input` -- forgets it, before and after it runs. The flags the shell sets directly (``echo_active``,
``floor_held``) matter only while the caller speaks over the agent, which is never idle.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

from .turn_actions import State

__all__ = ["IDLE_MARGIN", "NOT_IDLE", "IdleTurns", "turn_input"]

NOT_IDLE = -math.inf
IDLE_MARGIN = 1e-6
"""The silence timer is noted this much early: the full tick compares ``t - quiet_since >= silence_timeout``, and
``t < quiet_since + silence_timeout - IDLE_MARGIN`` implies it is false whatever the rounding (call times are
seconds, far below where 1 µs is lost to it)."""

F = TypeVar("F", bound=Callable[..., Any])


def turn_input(method: F) -> F:
    """Mark an engine method as an input: the engine may no longer be idle (see the module docstring)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._idle_until = NOT_IDLE
        try:
            return method(self, *args, **kwargs)
        finally:
            self._idle_until = NOT_IDLE

    wrapper.turn_input = True  # type: ignore[attr-defined]  # (tests check that every input is marked)
    return wrapper  # type: ignore[return-value]


class IdleTurns:
    """The quiet-spell half of :class:`~.turns.TurnEngine` (a mixin: ``self`` is the engine)."""

    _idle_until: float = NOT_IDLE

    def idle_at(self: Any, t: float) -> bool:
        """A tick at ``t`` would find nothing to do (the last tick found the engine in a quiet spell, no input came
        since, and no timer is due by ``t``)."""
        return t < self._idle_until

    def _idle(self: Any) -> list[Any]:
        """``tick`` found nothing to do: note until when nothing can happen if no input comes. Returns ``[]``."""
        if (self._utt is not None or self._digits or self._settle_at is not None or self._ending is not None
                or self._greeting is not None or self.state is State.PAUSED or self.state is State.ENDED):
            return []
        p = self.params
        until = p.max_call_duration if p.max_call_duration is not None else math.inf
        if self.state is State.LISTENING and self.reply_turn is None:
            if self._pending_text or self._reply_requested:
                return []  # (the endpointing wait and a requested reply are not quiet)
            if p.silence_timeout is not None and not self._utterances:
                until = min(until, self._quiet_since + p.silence_timeout - IDLE_MARGIN)
        self._idle_until = until
        return []
