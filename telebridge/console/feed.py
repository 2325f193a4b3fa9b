"""A conversation observer that tells the console's hub what one call is doing.

Attached to every conversation -- phone calls and realtime sessions alike -- when the runtime registers it
(:meth:`~.service.Console.call_started`), next to whatever observer the call already has (the realtime API's
events, a recording), through :class:`~telebridge.pipeline.observer.Observers`. Each hook is one dictionary
lookup and a few appends in the hub, on the event loop; nothing here waits or raises into the call.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..pipeline.observer import ConversationObserver
from .hub import ConsoleHub

__all__ = ["ConsoleFeed"]


class ConsoleFeed(ConversationObserver):
    def __init__(self, hub: ConsoleHub, call_id: str, clock: Callable[[], float] = time.time) -> None:
        self.hub = hub
        self.call_id = call_id
        self.clock = clock

    def user_speech_started(self, t: float) -> None:
        self.hub.speech_started(self.call_id, self.clock())

    def user_speech_stopped(self, t: float) -> None:
        self.hub.speech_stopped(self.call_id, self.clock())

    def user_transcript(self, text: str) -> None:
        self.hub.caller_said(self.call_id, self.clock(), text)

    def reply_started(self, turn_id: int) -> None:
        self.hub.reply_started(self.call_id, self.clock(), turn_id)

    def reply_text(self, turn_id: int, text: str, start_sample: int) -> None:
        self.hub.reply_text(self.call_id, self.clock(), turn_id, text)

    def reply_audible(self, turn_id: int, latency: dict[str, float] | None) -> None:
        self.hub.reply_audible(self.call_id, self.clock(), turn_id, latency)

    def reply_heard(self, turn_id: int, total: float) -> None:
        self.hub.reply_heard(self.call_id, self.clock(), turn_id, total)

    def reply_done(self, turn_id: int, text: str) -> None:
        self.hub.reply_done(self.call_id, self.clock(), turn_id, text)

    def reply_interrupted(self, turn_id: int, heard_text: str) -> None:
        self.hub.reply_interrupted(self.call_id, self.clock(), turn_id, heard_text)

    def reply_dropped(self, turn_id: int) -> None:
        self.hub.reply_dropped(self.call_id, self.clock(), turn_id)

    def reply_paused(self, turn_id: int, heard_sample: int) -> None:
        self.hub.reply_paused(self.call_id, self.clock(), turn_id)

    def reply_resumed(self, turn_id: int, from_sample: int) -> None:
        self.hub.reply_resumed(self.call_id, self.clock(), turn_id)

    def dtmf(self, digit: str) -> None:
        self.hub.dtmf(self.call_id, self.clock(), digit)

    def call_ending(self, reason: str) -> None:
        self.hub.ending(self.call_id, self.clock(), reason)
