"""What an Unmute-style client gets: only the events of Unmute's server union, plus ``unmute.additional_outputs``.

A session counts as Unmute-style once it speaks Ogg/Opus (detected, or chosen with an audio format) or sends
Unmute's typed instructions. Unmute's Python client validates every server event against the union in
``unmute/openai_realtime_api_events.py`` (a type outside it is an error) and builds its chat history from
``unmute.additional_outputs`` (``args.chat_history``, without system messages; the last message must be the
reply when ``response.audio.done`` arrives); Unmute's web frontend shows the same history as subtitles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .observer import ConversationEvents
from .protocol import AdditionalOutputs, ServerEvent

# The ``type`` of every event in Unmute's ServerEvent union.
UNMUTE_SERVER_EVENTS = frozenset({
    "error", "session.updated", "response.text.delta", "response.text.done", "response.audio.delta",
    "response.audio.done", "response.created", "conversation.item.input_audio_transcription.delta",
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "unmute.additional_outputs",
    "unmute.response.text.delta.ready", "unmute.response.audio.delta.ready", "unmute.interrupted_by_vad",
})


class ChatEvents(ConversationEvents):
    """:class:`ConversationEvents`, also keeping Unmute's chat history and sending it (when ``enabled()``).

    The history is the conversation as the user experienced it: their transcribed words (utterances of one turn
    joined), and each reply's text as it goes to speech, replaced at the end by what was said or, when cut off,
    by what was heard. A reply the user talked over before hearing anything disappears, as in the loop itself.
    """

    def __init__(self, emit: Callable[[ServerEvent], None], *, enabled: Callable[[], bool], **kwargs: Any) -> None:
        super().__init__(emit, **kwargs)
        self._enabled = enabled
        self.chat: list[dict[str, str]] = []
        self._reply_at: dict[int, int] = {}  # reply turn id → index of its message in ``chat``

    def _publish(self) -> None:
        if self._enabled():
            self._emit(AdditionalOutputs(args={
                "chat_history": [dict(m) for m in self.chat], "debug_dict": {}, "debug_plot_data": [],
            }))

    def user_transcript(self, text: str) -> None:
        super().user_transcript(text)
        if self.chat and self.chat[-1]["role"] == "user":
            self.chat[-1]["content"] += " " + text
        else:
            self.chat.append({"role": "user", "content": text})
        self._publish()

    def reply_started(self, turn_id: int) -> None:
        self._reply_at[turn_id] = len(self.chat)
        self.chat.append({"role": "assistant", "content": ""})
        super().reply_started(turn_id)
        self._publish()

    def reply_text(self, turn_id: int, text: str, start_sample: int) -> None:
        super().reply_text(turn_id, text, start_sample)
        at = self._reply_at.get(turn_id)
        if at is not None:
            said = self.chat[at]["content"]
            self.chat[at]["content"] = f"{said} {text}".strip()
            self._publish()

    def _settle(self, turn_id: int, text: str | None) -> None:
        at = self._reply_at.pop(turn_id, None)
        if at is None or at >= len(self.chat):
            return
        if text is None:
            del self.chat[at]
            self._reply_at = {t: (i - 1 if i > at else i) for t, i in self._reply_at.items()}
        else:
            self.chat[at]["content"] = text
        self._publish()

    def reply_done(self, turn_id: int, text: str) -> None:
        self._settle(turn_id, text)  # before response.text.done / response.audio.done reach the client
        super().reply_done(turn_id, text)

    def reply_interrupted(self, turn_id: int, heard_text: str) -> None:
        self._settle(turn_id, heard_text)
        super().reply_interrupted(turn_id, heard_text)

    def reply_dropped(self, turn_id: int) -> None:
        self._settle(turn_id, None)
        super().reply_dropped(turn_id)
