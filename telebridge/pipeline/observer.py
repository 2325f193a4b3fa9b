"""Hooks for whoever wants to watch a conversation as it happens (the realtime API, recordings).

The conversation loop calls these synchronously on the event loop; implementations must be quick and must not
raise (they are guarded anyway).
"""

from __future__ import annotations

import logging
from typing import Any


class ConversationObserver:
    def user_speech_started(self, t: float) -> None: ...

    def user_speech_stopped(self, t: float) -> None: ...

    def user_transcript(self, text: str) -> None:
        """A final transcript of one utterance."""

    def reply_started(self, turn_id: int) -> None: ...

    def reply_text(self, turn_id: int, text: str, start_sample: int) -> None:
        """A sentence of the reply, and where its audio starts in the turn (samples at the sink's rate)."""

    def reply_audible(self, turn_id: int, latency: dict[str, float] | None) -> None:
        """The reply's first audio went out; for an answer (not a greeting) its latency row: endpointing, stt,
        llm_first_token, tts_first_audio, send and total (seconds; see :mod:`.call_metrics`)."""

    def reply_heard(self, turn_id: int, total: float) -> None:
        """An answer's first audio was heard (phone: its first mark came back; realtime: it was sent): ``total``
        seconds after the end of the caller's speech."""

    def reply_done(self, turn_id: int, text: str) -> None:
        """The reply played out entirely."""

    def reply_interrupted(self, turn_id: int, heard_text: str) -> None: ...

    def reply_dropped(self, turn_id: int) -> None:
        """The reply was abandoned before any of it was heard (the caller went on talking; a new one follows)."""

    def reply_paused(self, turn_id: int, heard_sample: int) -> None:
        """Caller speech over the agent: playback stopped at ``heard_sample`` of the reply, pending confirmation."""

    def reply_resumed(self, turn_id: int, from_sample: int) -> None:
        """It was not an interruption: the reply plays on from ``from_sample``."""

    def dtmf(self, digit: str) -> None:
        """The caller pressed a key."""

    def call_ending(self, reason: str) -> None:
        """The conversation is over (silence, time limit, end_call, transfer_call): the call hangs up next."""


_log = logging.getLogger("telebridge.call")


class Observers(ConversationObserver):
    """Several observers of one conversation (a recording, the console): each hook goes to each in turn, and one
    that raises neither stops the others nor the call."""

    def __init__(self, *observers: ConversationObserver) -> None:
        self.observers = [o for o in observers if o is not None]


def _fan_out(name: str) -> Any:
    def hook(self: Observers, *args: Any) -> None:
        for observer in self.observers:
            method = getattr(observer, name, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception:
                _log.exception("observer %s.%s failed", type(observer).__name__, name)

    hook.__name__ = name
    return hook


for _name in [n for n in vars(ConversationObserver) if not n.startswith("_")]:
    setattr(Observers, _name, _fan_out(_name))
