"""The agent pressing keys (the ``send_dtmf`` tool): tones in the reply's own audio, sans-I/O bookkeeping.

Design (why in-band, see :mod:`telebridge.audio.dtmf`): the tones are one more piece of the reply, queued
behind whatever the agent said before calling the tool, so they go through the sink like speech — paced,
followed by marks, counted by the ledger, known to the echo guard — and the stream and the conversation stay
up. Three things differ from speech, and this module handles them:

* **Order.** The tool runs inside the reply's LLM round; text streamed before the call may still sit in the
  sentence chunker. :func:`queue_tones` flushes it first, then queues a :class:`Tones` item in the reply's
  sentence queue, which the reply's producer plays instead of synthesising (the reply is found through a
  context variable set by the producer, so a tool can only ever press keys into its own reply).
* **No barge-in over tones.** A phone menu often talks over key presses. Pausing mid-tone and resuming later
  would split one press into two (or one wrong one), so while tones are in flight or playing
  :meth:`KeypadTones.holds_floor` is true and the turn engine allows no pause or interruption.
* **Cut off before they played.** The tool already told the LLM the keys were pressed; if the reply is
  interrupted before its tones went out, the cut-off message in the history says so (:meth:`unplayed`).
* **Their echo.** Twilio detects DTMF on the *inbound* track; an echoey line can send our own tones back as
  ``dtmf`` events. A key we are playing (or played in the last :data:`ECHO_WINDOW` seconds) that comes back is
  not the caller pressing it: :meth:`KeypadTones.is_echo`.
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..audio.dtmf import dtmf_tones

__all__ = ["Tones", "KeypadTones", "queue_tones", "current_reply", "ECHO_WINDOW", "LEAD"]

ECHO_WINDOW = 0.8  # seconds after our tones during which the same key coming back is taken for their echo
LEAD = 0.3  # seconds before a tone is heard that it may already sit in Twilio's buffer (pacing lead + a chunk)

current_reply: contextvars.ContextVar[Any] = contextvars.ContextVar("telebridge_current_reply", default=None)


@dataclass(frozen=True, slots=True, eq=False)
class Tones:
    """Keypad tones queued in a reply, played as they are (no synthesis)."""

    keys: str
    audio: np.ndarray


@dataclass(slots=True)
class _Block:
    turn_id: int
    start: int  # reply offsets (samples at the sink's rate)
    end: int
    keys: str


class KeypadTones:
    """Where a call's tones sit in its replies, whether they hold the floor now, and what their echo is."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._blocks: list[_Block] = []
        self._echo_until = float("-inf")
        self._echo_keys = ""
        self.sent: list[str] = []  # every key sequence played, in order

    def make(self, keys: str) -> Tones:
        return Tones(keys, dtmf_tones(keys, self.rate))

    @property
    def pending(self) -> bool:
        """Tones placed that have not finished playing."""
        return bool(self._blocks)

    def placed(self, turn_id: int, start: int, end: int, keys: str) -> None:
        """Tones for ``keys`` occupy ``[start, end)`` of reply ``turn_id``."""
        self._blocks.append(_Block(turn_id, start, end, keys))
        self.sent.append(keys)

    def holds_floor(self, turn_id: int | None, heard: int, now: float) -> bool:
        """Are the reply's tones in flight or playing at ``heard`` (its heard samples) at call time ``now``?"""
        if not self._blocks:
            return False
        if turn_id is None:
            self._blocks.clear()
            return False
        self._blocks = [b for b in self._blocks if b.turn_id == turn_id and heard < b.end]
        lead = int(LEAD * self.rate)
        for block in self._blocks:
            if block.start - lead <= heard:
                self._echo_until, self._echo_keys = now + ECHO_WINDOW, block.keys
                return True
        return False

    def unplayed(self, turn_id: int, heard: int) -> str:
        """Keys of reply ``turn_id`` not yet started at ``heard`` (the reply was cut off): forgotten, returned."""
        keys = "".join(b.keys for b in self._blocks if b.turn_id == turn_id and heard < b.start)
        self._blocks = [b for b in self._blocks if not (b.turn_id == turn_id and heard < b.start)]
        return keys

    def is_echo(self, key: str, now: float) -> bool:
        """Is a ``dtmf`` event for ``key`` at call time ``now`` our own tone coming back?"""
        return now <= self._echo_until and key in self._echo_keys


async def queue_tones(reply: Any, tones: Tones) -> bool:
    """Queue ``tones`` in ``reply`` (its ``sentences`` queue and ``chunker``) after the text so far."""
    queue: asyncio.Queue[Any] | None = getattr(reply, "sentences", None)
    if queue is None or getattr(reply, "text_done", True):
        return False
    chunker = getattr(reply, "chunker", None)
    if chunker is not None:
        for piece in chunker.flush():
            await queue.put(piece)
    await queue.put(tones)
    return True
