"""Hooks for whoever wants to watch a conversation as it happens (the realtime API, recordings).

The conversation loop calls these synchronously on the event loop; implementations must be quick and must not
raise (they are guarded anyway).
"""

from __future__ import annotations


class ConversationObserver:
    def user_speech_started(self, t: float) -> None: ...

    def user_speech_stopped(self, t: float) -> None: ...

    def user_transcript(self, text: str) -> None:
        """A final transcript of one utterance."""

    def reply_started(self, turn_id: int) -> None: ...

    def reply_text(self, turn_id: int, text: str, start_sample: int) -> None:
        """A sentence of the reply, and where its audio starts in the turn (samples at the sink's rate)."""

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
