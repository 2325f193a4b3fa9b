"""Recording phone calls in the realtime API's vocabulary, so one reader serves both doors.

A phone call has no client events to record, so the same :class:`~.observer.ConversationEvents` that speaks
to browsers writes the server side (speech started/stopped, transcripts, response text) into the recording,
:class:`RecordingSink` adds the agent's audio (μ-law 8 kHz, base64, as sent to Twilio), and the media loop
counts the caller's audio samples. Consent is the agent's: ``session_data["allow_recording"]`` in the
``SessionConfig`` it returns, followed for the whole call — a tool or handler that sets it to ``False`` deletes
the recording at once.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..audio.g711 import ulaw_encode
from .observer import ConversationEvents
from .protocol import AudioDelta, ServerEvent

if TYPE_CHECKING:
    from ..recording import SessionRecording
    from ..runtime import Runtime
    from ..session import SessionConfig


class RecordingSink:
    """Any :class:`~telebridge.pipeline.sink.AudioSink`, with the agent's audio also written to a recording."""

    def __init__(self, inner: Any, recording: SessionRecording) -> None:
        self._inner = inner
        self._recording = recording

    # The conversation loop sets these on the sink; they must land on the real one.
    @property
    def on_turn_audible(self) -> Callable[[int], None] | None:
        return self._inner.on_turn_audible  # type: ignore[no-any-return]

    @on_turn_audible.setter
    def on_turn_audible(self, fn: Callable[[int], None] | None) -> None:
        self._inner.on_turn_audible = fn

    @property
    def on_turn_played(self) -> Callable[[int], None] | None:
        return self._inner.on_turn_played  # type: ignore[no-any-return]

    @on_turn_played.setter
    def on_turn_played(self, fn: Callable[[int], None] | None) -> None:
        self._inner.on_turn_played = fn

    @property
    def sample_rate(self) -> int:
        return int(self._inner.sample_rate)

    def enqueue(self, turn_id: int, audio: np.ndarray) -> int:
        n = int(self._inner.enqueue(turn_id, audio))
        if n and self._recording.wants_server():
            ulaw = ulaw_encode(audio) if self.sample_rate == 8000 else b""
            if ulaw:
                self._recording.server(AudioDelta(delta=base64.b64encode(ulaw).decode("ascii")).model_dump(mode="json"))
        return n

    def __getattr__(self, name: str) -> Any:  # start, finish_turn, clear, heard, mark_echoed, …
        return getattr(self._inner, name)


def phone_recording(
    runtime: Runtime, sink: Any, *, call_id: str, call_sid: str, stream_sid: str
) -> tuple[SessionRecording, Any, ConversationEvents, Callable[[SessionConfig], SessionConfig]] | None:
    """The recording, wrapped sink, observer and config hook for one phone call (None when recording is off)."""
    recording = runtime.recorder.session(call_id, transport="phone", agent=runtime.agent.id, call_sid=call_sid,
                                         stream_sid=stream_sid, audio_format="g711_ulaw")
    if recording is None:
        return None

    def emit(event: ServerEvent) -> None:
        recording.server(event.model_dump(mode="json"))

    def history() -> list[dict[str, Any]]:
        call = runtime.calls.get(call_id)
        return list(call.history) if call is not None else []

    def voice() -> str | None:
        return recording.metadata.get("voice")

    def adjust(config: SessionConfig) -> SessionConfig:
        recording.update_metadata(voice=_voice_name(config.tts))
        recording.watch_consent(config.session_data)  # the very dict the call's handlers and tools mutate
        return config

    observer = ConversationEvents(emit, history=history, voice=voice)
    return recording, RecordingSink(sink, recording), observer, adjust


def _voice_name(tts: Any) -> str | None:
    """The voice as recorded (a JSON string): a voice name or id, else the provider. ``TTS.ElevenLabs`` holds a
    ``Voice`` model and ``TTS.Cartesia`` may hold a 192-number embedding; neither goes into the file as is."""
    voice = getattr(tts, "voice", None)
    if isinstance(voice, str) and voice:
        return voice
    for attr in ("name", "id"):
        value = getattr(voice, attr, None)
        if isinstance(value, str) and value:
            return value
    provider = getattr(tts, "provider", None)
    return str(provider) if provider else None
