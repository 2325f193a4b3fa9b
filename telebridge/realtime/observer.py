"""Turning the conversation loop's hooks into the realtime API's server events.

The same translation feeds a browser (through :class:`~.sink.RealtimeSink`, which holds text back until its
audio goes out) and a phone call's recording (no sink: text is recorded as soon as it is spoken).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..pipeline.observer import ConversationObserver
from .protocol import (
    InterruptedByVad,
    ResponseCreated,
    ResponseInfo,
    ServerEvent,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    TextDeltaReady,
    TextDone,
    TranscriptionCompleted,
    TranscriptionDelta,
)


class ConversationEvents(ConversationObserver):
    def __init__(
        self,
        emit: Callable[[ServerEvent], None],
        *,
        history: Callable[[], list[dict[str, Any]]] = list,
        voice: Callable[[], str | None] = lambda: None,
        text_sink: Any = None,
        before_reply: Callable[[int], None] | None = None,
    ) -> None:
        self._emit = emit
        self._history = history
        self._voice = voice
        self._text_sink = text_sink
        self._before_reply = before_reply
        self._utterance_start: float | None = None
        self._open_replies: set[int] = set()

    def user_speech_started(self, t: float) -> None:
        if self._utterance_start is None:
            self._utterance_start = t
        self._emit(SpeechStarted(audio_start_ms=int(round(t * 1000))))

    def user_speech_stopped(self, t: float) -> None:
        self._emit(SpeechStopped(audio_end_ms=int(round(t * 1000))))

    def user_transcript(self, text: str) -> None:
        start = round(self._utterance_start or 0.0, 3)
        self._utterance_start = None
        for i, word in enumerate(text.split()):
            self._emit(TranscriptionDelta(delta=word if i == 0 else " " + word, start_time=start))
        self._emit(TranscriptionCompleted(transcript=text))

    def reply_started(self, turn_id: int) -> None:
        if self._before_reply is not None:
            self._before_reply(turn_id)  # e.g. a voice chosen mid-conversation takes effect from this reply
        self._open_replies.add(turn_id)
        if self._text_sink is not None:
            self._text_sink.begin_reply(turn_id)
        history = [dict(m) for m in self._history()]
        self._emit(ResponseCreated(response=ResponseInfo(voice=self._voice(), chat_history=history)))

    def reply_text(self, turn_id: int, text: str, start_sample: int) -> None:
        words = text.split()
        for word in words:
            self._emit(TextDeltaReady(delta=" " + word))
        if self._text_sink is not None:
            self._text_sink.add_text(turn_id, start_sample, text)
        else:
            for word in words:
                self._emit(TextDelta(delta=" " + word))

    def reply_resumed(self, turn_id: int, from_sample: int) -> None:
        """Not an interruption after all: the reply's audio (and its remaining words) go on."""
        if self._text_sink is not None:
            self._text_sink.resume_reply(turn_id, from_sample)

    def reply_done(self, turn_id: int, text: str) -> None:
        if self._text_sink is not None:
            self._text_sink.end_reply(turn_id)
        if turn_id in self._open_replies:
            self._open_replies.discard(turn_id)
            self._emit(TextDone(text=text))

    def reply_interrupted(self, turn_id: int, heard_text: str) -> None:
        self._emit(InterruptedByVad())
        if self._text_sink is not None:
            self._text_sink.end_reply(turn_id)
        if turn_id in self._open_replies:
            self._open_replies.discard(turn_id)
            self._emit(TextDone(text=heard_text))

    def reply_dropped(self, turn_id: int) -> None:
        """The user spoke again before hearing any of the reply: it ends empty (a new one follows).

        Called by the conversation loop when it has such a hook (see the report for ``call.py``)."""
        if self._text_sink is not None:
            self._text_sink.end_reply(turn_id)
        if turn_id in self._open_replies:
            self._open_replies.discard(turn_id)
            self._emit(TextDone(text=""))
