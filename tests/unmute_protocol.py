"""Test-only pydantic models of Unmute's wire protocol, written from Unmute's source, to check telebridge the
way Unmute's own clients do.

Mirrors (kyutai-labs/unmute):
* ``unmute/openai_realtime_api_events.py`` — the event models and the ``ServerEvent`` union (the version whose
  ``SessionConfig`` requires ``allow_recording`` and whose ``Response`` carries ``chat_history``). Unmute's
  load-test client parses every server message with
  ``TypeAdapter(Annotated[ServerEvent, Field(discriminator="type")]).validate_json``: an event type outside
  the union, or a required field that is missing or null, is an error.
* ``unmute/llm/system_prompt.py`` — the ``Instructions`` union (tagged on ``type``).
* ``unmute/tts/voices.py`` — ``VoiceSample`` (``extra="forbid"``) and ``FileVoiceSource``; the load-test
  client reads ``GET /v1/voices`` with ``VoiceSample(**voices[0])`` and sends ``source.path_on_server``.
Field names and types follow Unmute's; like Unmute's models (pydantic's default), events ignore unknown
fields. This is not Unmute's code, and nothing outside ``tests/`` uses it.
"""

from __future__ import annotations

import random
import string
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

LanguageCode = Literal["en", "fr", "en/fr", "fr/en"]


def random_event_id() -> str:
    return "event_" + "".join(random.choices(string.ascii_letters + string.digits, k=21))


# --- unmute/llm/system_prompt.py: the typed instructions ---------------------------------------------------
class ConstantInstructions(BaseModel):
    type: Literal["constant"] = "constant"
    text: str = "(Unmute's default additional instructions)"
    language: LanguageCode | None = None


class SmalltalkInstructions(BaseModel):
    type: Literal["smalltalk"] = "smalltalk"
    language: LanguageCode | None = None


class GuessAnimalInstructions(BaseModel):
    type: Literal["guess_animal"] = "guess_animal"
    language: LanguageCode | None = None


class QuizShowInstructions(BaseModel):
    type: Literal["quiz_show"] = "quiz_show"
    language: LanguageCode | None = None


class NewsInstructions(BaseModel):
    type: Literal["news"] = "news"
    language: LanguageCode | None = None


class UnmuteExplanationInstructions(BaseModel):
    type: Literal["unmute_explanation"] = "unmute_explanation"


Instructions = Annotated[
    ConstantInstructions | SmalltalkInstructions | GuessAnimalInstructions | QuizShowInstructions
    | NewsInstructions | UnmuteExplanationInstructions,
    Field(discriminator="type"),
]


# --- unmute/openai_realtime_api_events.py ------------------------------------------------------------------
class BaseEvent(BaseModel):
    event_id: str = Field(default_factory=random_event_id)


class ErrorDetails(BaseModel):
    type: str
    code: str | None = None
    message: str
    param: str | None = None
    details: object | None = None


class Error(BaseEvent):
    type: Literal["error"] = "error"
    error: ErrorDetails


class SessionConfig(BaseModel):
    instructions: Instructions | None = None
    voice: str | None = None
    allow_recording: bool


class SessionUpdate(BaseEvent):
    type: Literal["session.update"] = "session.update"
    session: SessionConfig


class SessionUpdated(BaseEvent):
    type: Literal["session.updated"] = "session.updated"
    session: SessionConfig


class InputAudioBufferAppend(BaseEvent):
    type: Literal["input_audio_buffer.append"] = "input_audio_buffer.append"
    audio: str  # base64 Ogg/Opus


class InputAudioBufferSpeechStarted(BaseEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"


class InputAudioBufferSpeechStopped(BaseEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"


class Response(BaseModel):
    object: Literal["realtime.response"] = "realtime.response"
    status: Literal["in_progress", "completed", "cancelled", "failed", "incomplete"]
    voice: str
    chat_history: list[dict[str, Any]] = Field(default_factory=list)


class ResponseCreated(BaseEvent):
    type: Literal["response.created"] = "response.created"
    response: Response


class ResponseTextDelta(BaseEvent):
    type: Literal["response.text.delta"] = "response.text.delta"
    delta: str


class ResponseTextDone(BaseEvent):
    type: Literal["response.text.done"] = "response.text.done"
    text: str


class ResponseAudioDelta(BaseEvent):
    type: Literal["response.audio.delta"] = "response.audio.delta"
    delta: str  # base64 Ogg/Opus


class ResponseAudioDone(BaseEvent):
    type: Literal["response.audio.done"] = "response.audio.done"


class ConversationItemInputAudioTranscriptionDelta(BaseEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    delta: str
    start_time: float


class UnmuteAdditionalOutputs(BaseEvent):
    type: Literal["unmute.additional_outputs"] = "unmute.additional_outputs"
    args: Any


class UnmuteResponseTextDeltaReady(BaseEvent):
    type: Literal["unmute.response.text.delta.ready"] = "unmute.response.text.delta.ready"
    delta: str


class UnmuteResponseAudioDeltaReady(BaseEvent):
    type: Literal["unmute.response.audio.delta.ready"] = "unmute.response.audio.delta.ready"
    number_of_samples: int


class UnmuteInterruptedByVAD(BaseEvent):
    type: Literal["unmute.interrupted_by_vad"] = "unmute.interrupted_by_vad"


ServerEvent = (
    Error | SessionUpdated | ResponseTextDelta | ResponseTextDone | ResponseAudioDelta | ResponseAudioDone
    | ResponseCreated | ConversationItemInputAudioTranscriptionDelta | InputAudioBufferSpeechStarted
    | InputAudioBufferSpeechStopped | UnmuteAdditionalOutputs | UnmuteResponseTextDeltaReady
    | UnmuteResponseAudioDeltaReady | UnmuteInterruptedByVAD
)
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(Annotated[ServerEvent, Field(discriminator="type")])


# --- unmute/tts/voices.py -----------------------------------------------------------------------------------
class FileVoiceSource(BaseModel):
    source_type: Literal["file"] = "file"
    path_on_server: str
    description: str | None = None
    description_link: str | None = None


class FreesoundVoiceSource(BaseModel):
    source_type: Literal["freesound"] = "freesound"
    url: str
    start_time: float | None = None
    path_on_server: str | None = None


class VoiceSample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    comment: str | None = None
    good: bool | None = None
    instructions: Instructions | None = None
    source: FreesoundVoiceSource | FileVoiceSource = Field(discriminator="source_type")
