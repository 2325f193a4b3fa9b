"""What ``configure_session`` returns (``SessionConfig``) and what handlers receive (the input TypedDicts).

Names, types and defaults follow jay_ai 0.8.0. Three deliberate differences, all additive:

* ``vad``/``stt``/``tts`` may be omitted and default to local Silero / Whisper / Piper, because telebridge runs
  offline; a Jay file that names them still works unchanged.
* Each interruption setting has two spellings, Jay's (``interrupt_time_threshold``, ``interrupt_word_threshold``)
  and LiveKit's (``min_interruption_duration``, ``min_interruption_words``), since Jay's docs use both.
* ``max_endpointing_delay``: how long to wait when the transcript looks unfinished (a trailing "and", no
  final punctuation) before ending the caller's turn anyway.

Messages are TypedDicts, not models, so agent code keeps writing plain dict literals and OpenAI clients take
them as they are; ``SessionConfig`` still validates them through a ``TypeAdapter``.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from typing_extensions import NotRequired, Required, TypedDict

from telebridge.config.stt import AzureSTT, DeepgramSTT, OpenAISTT, WhisperSTT
from telebridge.config.tts import (
    AzureTTS,
    CartesiaTTS,
    DeepgramTTS,
    ElevenLabsTTS,
    FishAudioTTS,
    GoogleTTS,
    OpenAITTS,
    PiperTTS,
)
from telebridge.config.vad import SileroVAD


class Message(TypedDict, total=False):
    """One chat message, OpenAI-shaped. ``content`` may be ``None`` on an assistant message that calls tools."""

    role: Required[Literal["system", "user", "assistant", "tool"]]
    content: Required[str | None]
    name: str
    tool_call_id: str
    tool_calls: list[dict[str, Any]]


class ConfigureSessionInput(TypedDict):
    """Input of ``configure_session``. In telebridge ``custom_data`` carries the call's metadata."""

    custom_data: dict[str, Any]
    call_id: NotRequired[str]


class LLMResponseHandlerInput(TypedDict):
    """Input of ``llm_response_handler``. ``call_id`` is a telebridge addition (Jay passed no id at all)."""

    messages: list[Message]
    session_data: dict[str, Any]
    call_id: NotRequired[str]


MESSAGES_ADAPTER: TypeAdapter[list[Message]] = TypeAdapter(list[Message])

STTConfig = Annotated[Union[DeepgramSTT, AzureSTT, OpenAISTT, WhisperSTT], Field(discriminator="provider")]
TTSConfig = Annotated[
    Union[ElevenLabsTTS, OpenAITTS, GoogleTTS, AzureTTS, DeepgramTTS, CartesiaTTS, FishAudioTTS, PiperTTS],
    Field(discriminator="provider"),
]

def reject_unknown_fields(model: str, data: Any, known: set[str]) -> Any:
    """Say which field was meant, instead of pydantic's bare "Extra inputs are not permitted"."""
    if not isinstance(data, dict):
        return data
    unknown = [key for key in data if key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.5)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"{model} got unknown field(s): {', '.join(hints)}. Valid fields: {', '.join(sorted(known))}.")
    return data


# Alternative spelling -> canonical field name.
_ALIASES = {"min_interruption_duration": "interrupt_time_threshold", "min_interruption_words": "interrupt_word_threshold"}


class SessionConfig(BaseModel):
    """Everything a call needs to know about the agent's session; returned by ``configure_session``."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, validate_assignment=True, hide_input_in_errors=True
    )

    initial_messages: list[Message] = Field(description="Conversation so far; [] starts fresh.")
    vad: SileroVAD = Field(default_factory=SileroVAD)
    stt: STTConfig = Field(default_factory=WhisperSTT)
    tts: TTSConfig = Field(default_factory=PiperTTS)
    session_data: dict[str, Any] = Field(default_factory=dict)
    first_message: str | None = Field(None, description="If set, the agent speaks this first.")
    allow_interruptions: bool = True
    interrupt_time_threshold: float = Field(
        0.5,
        ge=0,
        validation_alias=AliasChoices("interrupt_time_threshold", "min_interruption_duration"),
        description="Seconds of caller speech before the agent is cut off.",
    )
    interrupt_word_threshold: int = Field(
        0,
        ge=0,
        validation_alias=AliasChoices("interrupt_word_threshold", "min_interruption_words"),
        description="Words the caller must say before the agent is cut off.",
    )
    min_endpointing_delay: float = Field(0.5, ge=0, description="Seconds of silence before the caller's turn ends.")
    max_endpointing_delay: float = Field(
        3.0, ge=0, description="Longest wait for a caller whose transcript looks unfinished (telebridge extension)."
    )
    max_nested_function_calls: int = Field(1, ge=0, description="Tool rounds one caller turn may chain.")

    @model_validator(mode="before")
    @classmethod
    def _clear_unknown_and_duplicate_fields(cls, data: Any) -> Any:
        data = reject_unknown_fields("SessionConfig", data, set(cls.model_fields) | set(_ALIASES))
        if not isinstance(data, dict):
            return data
        for alias, canonical in _ALIASES.items():
            if alias in data and canonical in data:
                if data[alias] != data[canonical]:
                    raise ValueError(f"{alias!r} and {canonical!r} are the same setting; pass only one of them.")
                data = {key: value for key, value in data.items() if key != alias}
        return data

    @model_validator(mode="after")
    def _endpointing_order(self) -> SessionConfig:
        if self.max_endpointing_delay < self.min_endpointing_delay:
            raise ValueError(
                f"max_endpointing_delay ({self.max_endpointing_delay}) must not be below "
                f"min_endpointing_delay ({self.min_endpointing_delay})."
            )
        return self

    @property
    def min_interruption_duration(self) -> float:
        """LiveKit's name for :attr:`interrupt_time_threshold`."""
        return self.interrupt_time_threshold

    @property
    def min_interruption_words(self) -> int:
        """LiveKit's name for :attr:`interrupt_word_threshold`."""
        return self.interrupt_word_threshold


__all__ = [
    "Message",
    "ConfigureSessionInput",
    "LLMResponseHandlerInput",
    "SessionConfig",
    "MESSAGES_ADAPTER",
    "reject_unknown_fields",
    "STTConfig",
    "TTSConfig",
]
