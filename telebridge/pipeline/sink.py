"""Where a conversation's agent audio goes, and what the other side has heard of it.

A sink is the transport-specific half of the outbound path: Twilio's (:class:`~.outbound.OutboundAudio`:
μ-law, named marks, ``clear``) or the realtime API's (PCM deltas paced a little ahead of real time). The
conversation loop only needs the operations below, so the same loop serves phone calls and browsers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np


class AudioSink(Protocol):
    sample_rate: int
    on_turn_audible: Callable[[int], None] | None  # first audio of a turn went out
    on_turn_played: Callable[[int], None] | None  # every sample of a finished turn has played

    def start(self) -> None: ...

    def enqueue(self, turn_id: int, audio: np.ndarray) -> int:
        """Queue float32 audio at ``sample_rate``; returns how many samples were queued."""
        ...

    def finish_turn(self, turn_id: int) -> bool:
        """No more audio for this turn. True if it has already played out entirely."""
        ...

    def drop_turn(self, turn_id: int) -> None:
        """Forget the turn's audio not yet handed to the transport."""
        ...

    async def clear(self) -> None:
        """Stop at once: drop everything queued here and at the far end."""
        ...

    def forget_turn(self, turn_id: int) -> None:
        """The turn is over; drop its bookkeeping."""
        ...

    def heard(self, turn_id: int) -> int:
        """Samples of the turn the listener has heard."""
        ...

    async def aclose(self) -> None: ...
