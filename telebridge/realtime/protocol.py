"""The realtime API's wire format: Unmute's events (an extension of OpenAI's Realtime API), as pydantic models.

Client events are validated in two steps — first the ``type``, then that event's own model — so a pydantic
error's ``loc`` is relative to the event (``["session"]``, ``["session", "voice"]``), exactly as the seed's
error example shows. Every server event gets a fresh ``event_id`` (``event_`` + 20 random characters), and
serialises with ``type`` first and ``event_id`` second, like the seed's examples.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import string
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .instructions import TYPED_CLASSES, TYPED_INSTRUCTIONS, TypedInstructions

AudioFormat = Literal["pcm16", "g711_ulaw", "opus"]
FORMAT_RATES: dict[str, int] = {"pcm16": 24000, "g711_ulaw": 8000, "opus": 24000}

_ID_ALPHABET = string.ascii_letters + string.digits

# OpenAI session fields a generic Realtime client may send. They are accepted and ignored (turn-taking is the
# agent's SessionConfig, the model is the agent's), so such clients work; anything else is a typo and an error.
IGNORED_OPENAI_SESSION_FIELDS = frozenset({
    "model", "modalities", "turn_detection", "input_audio_transcription", "input_audio_noise_reduction",
    "temperature", "tools", "tool_choice", "max_response_output_tokens", "speed", "tracing", "type",
})


def new_event_id() -> str:
    return "event_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


# --- client events ------------------------------------------------------------------------------------------


class Instructions(BaseModel):
    """Unmute's extension: who the agent is (``character``) and what the conversation is about (``scenario``)."""

    model_config = ConfigDict(extra="forbid")

    character: str | None = Field(None, max_length=20000)
    scenario: str | None = Field(None, max_length=20000)

    def system_prompt(self, rng: Any = None) -> str | None:
        """The system message an agent receives for these instructions (None when both are empty)."""
        parts = [p.strip() for p in (self.character, self.scenario) if p and p.strip()]
        return "\n\n".join(parts) or None


def _instructions(value: Any, handler: Any) -> Any:
    """The seed's ``{character, scenario}``, or (with a ``type`` tag) one of Unmute's typed instructions.

    Each shape is validated on its own, so errors keep the seed's locations (``["session", "instructions",
    "character"]``) and typed ones are located under their tag, as in Unmute (``[..., "constant", "text"]``)."""
    if value is None or isinstance(value, (Instructions, *TYPED_CLASSES)):
        return value
    if isinstance(value, dict) and "type" in value:
        return TYPED_INSTRUCTIONS.validate_python(value)
    return _SEED_INSTRUCTIONS.validate_python(value)


_SEED_INSTRUCTIONS: TypeAdapter[Instructions] = TypeAdapter(Instructions)
AnyInstructions = Annotated[Instructions | TypedInstructions | None, WrapValidator(_instructions)]


class SessionConfig(BaseModel):
    """``session`` of ``session.update``: the seed's three fields, then OpenAI's audio formats.

    ``voice`` must be one ``GET /v1/voices`` lists (checked against the voice store passed as validation context
    ``{"voices": store}``). The audio formats are echoed only once a client has set them, so the seed's
    ``session.updated`` example is reproduced exactly for clients that never mention them.
    """

    model_config = ConfigDict(extra="forbid")

    instructions: AnyInstructions = None
    voice: str | None = None
    allow_recording: bool = False
    input_audio_format: AudioFormat = "pcm16"
    output_audio_format: AudioFormat = "pcm16"

    ECHO_ALWAYS: ClassVar[tuple[str, ...]] = ("instructions", "voice", "allow_recording")

    @model_validator(mode="before")
    @classmethod
    def _drop_openai_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in IGNORED_OPENAI_SESSION_FIELDS}
        return data

    @field_validator("voice")
    @classmethod
    def _known_voice(cls, value: str | None, info: ValidationInfo) -> str | None:
        store = (info.context or {}).get("voices")
        if value is not None and store is not None and store.resolve(value) is None:
            names = store.names()
            shown = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
            raise PydanticCustomError(
                "unknown_voice",
                "Unknown voice '{voice}': use a name from GET /v1/voices ({known})",
                {"voice": value, "known": shown or "none"},
            )
        return value

    def echo(self) -> dict[str, Any]:
        """The ``session`` of ``session.updated``: defaults filled in, audio formats once the client set them."""
        data = self.model_dump(mode="json")
        keep = set(self.ECHO_ALWAYS) | (self.model_fields_set & {"input_audio_format", "output_audio_format"})
        return {k: v for k, v in data.items() if k in keep}


class SessionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["session.update"]
    event_id: str | None = None
    session: SessionConfig


def _decode_base64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError("base64_decode", "Audio must be base64 (standard alphabet, with padding)") from None


class InputAudioBufferAppend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["input_audio_buffer.append"]
    event_id: str | None = None
    audio: Annotated[bytes, Field(description="base64 audio in the session's input_audio_format")]

    @field_validator("audio", mode="before")
    @classmethod
    def _b64(cls, value: Any) -> bytes:
        return _decode_base64(value)


class InputAudioBufferCommit(BaseModel):
    """OpenAI's: the user's turn is over (telebridge answers once it is transcribed, with no endpointing wait)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["input_audio_buffer.commit"]
    event_id: str | None = None


class ResponseCreate(BaseModel):
    """OpenAI's: reply now (or as soon as the user's words are transcribed). ``response`` options are ignored:
    the agent decides what and how to answer."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["response.create"]
    event_id: str | None = None
    response: dict[str, Any] | None = None


class ResponseCancel(BaseModel):
    """OpenAI's: stop the reply in progress (its audio stops, the history keeps what was heard)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["response.cancel"]
    event_id: str | None = None
    response_id: str | None = None


TurnEvent = InputAudioBufferCommit | ResponseCreate | ResponseCancel
ClientEvent = SessionUpdate | InputAudioBufferAppend | TurnEvent
CLIENT_EVENTS: dict[str, type[BaseModel]] = {
    "session.update": SessionUpdate, "input_audio_buffer.append": InputAudioBufferAppend,
    "input_audio_buffer.commit": InputAudioBufferCommit, "response.create": ResponseCreate,
    "response.cancel": ResponseCancel,
}


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "response.create",
                  "response.cancel"]


_JSON_OBJECT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


def parse_client_event(text: str | bytes, *, voices: Any = None) -> ClientEvent:
    """Validate one client frame; raises ``ValidationError`` (bad JSON, unknown type, bad fields)."""
    data = _JSON_OBJECT.validate_json(text)
    _Envelope.model_validate(data)  # unknown or missing "type" → loc ["type"]
    model = CLIENT_EVENTS[data["type"]]
    return model.model_validate(data, context={"voices": voices})  # type: ignore[return-value]


def error_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors in the seed's shape: ``{type, loc, msg}`` (no input echoed back, no docs URLs)."""
    return [
        {"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


# --- server events ------------------------------------------------------------------------------------------


class ServerEvent(BaseModel):
    """Base of every server event: ``type`` then ``event_id``, then the event's own fields."""

    model_config = ConfigDict(extra="forbid")

    type: str
    event_id: str = Field(default_factory=new_event_id)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False)


class ErrorInfo(BaseModel):
    type: Literal["invalid_request_error", "fatal", "warning"]
    code: str | None = None
    message: str
    param: str | None = None
    details: list[dict[str, Any]] | None = None

    @model_serializer(mode="wrap")
    def _omit_empty(self, handler: Any) -> Any:
        """``code``/``param``/``details`` only when they say something (the seed's example has none of the first two)."""
        return {k: v for k, v in handler(self).items() if v is not None}


class ErrorEvent(ServerEvent):
    type: Literal["error"] = "error"
    error: ErrorInfo


class SessionUpdated(ServerEvent):
    type: Literal["session.updated"] = "session.updated"
    session: dict[str, Any]


class SpeechStarted(ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int


class SpeechStopped(ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int


class TranscriptionDelta(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    delta: str
    start_time: float


class TranscriptionCompleted(ServerEvent):
    """OpenAI's event for the whole utterance (Unmute only sends the deltas); handy for clients and recordings."""

    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    transcript: str


class ResponseInfo(BaseModel):
    object: Literal["realtime.response"] = "realtime.response"
    status: Literal["in_progress", "completed", "cancelled"] = "in_progress"
    voice: str | None = None
    chat_history: list[dict[str, Any]] = Field(default_factory=list)


class ResponseCreated(ServerEvent):
    type: Literal["response.created"] = "response.created"
    response: ResponseInfo


class TextDeltaReady(ServerEvent):
    type: Literal["unmute.response.text.delta.ready"] = "unmute.response.text.delta.ready"
    delta: str


class TextDelta(ServerEvent):
    type: Literal["response.text.delta"] = "response.text.delta"
    delta: str


class TextDone(ServerEvent):
    type: Literal["response.text.done"] = "response.text.done"
    text: str


class AudioDelta(ServerEvent):
    type: Literal["response.audio.delta"] = "response.audio.delta"
    delta: str  # base64 audio in the session's output_audio_format


class AudioDone(ServerEvent):
    type: Literal["response.audio.done"] = "response.audio.done"


class InterruptedByVad(ServerEvent):
    type: Literal["unmute.interrupted_by_vad"] = "unmute.interrupted_by_vad"


class AdditionalOutputs(ServerEvent):
    """Unmute's: ``args = {"chat_history": [{role, content}, …] (no system messages), "debug_dict": {…},
    "debug_plot_data": []}``, sent whenever the conversation changes (Unmute-style clients only)."""

    type: Literal["unmute.additional_outputs"] = "unmute.additional_outputs"
    args: dict[str, Any]


def invalid_request(exc: ValidationError, message: str = "Invalid message") -> ErrorEvent:
    details = error_details(exc)
    voice = next((d for d in details if d["type"] == "unknown_voice"), None)
    if voice is not None:  # OpenAI-style pointers, on top of the details, for the one error clients act on
        return ErrorEvent(error=ErrorInfo(type="invalid_request_error", code="unknown_voice", message=message,
                                          param=".".join(map(str, voice["loc"])), details=details))
    return ErrorEvent(error=ErrorInfo(type="invalid_request_error", message=message, details=details))


def fatal(message: str, code: str | None = None) -> ErrorEvent:
    return ErrorEvent(error=ErrorInfo(type="fatal", message=message, code=code))


def warning(message: str, code: str | None = None) -> ErrorEvent:
    return ErrorEvent(error=ErrorInfo(type="warning", message=message, code=code))

