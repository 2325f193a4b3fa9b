"""What ``configure_session`` returns (``SessionConfig``) and what handlers receive (the input TypedDicts).

Names, types and defaults follow jay_ai 0.8.0. Three deliberate differences, all additive:

* ``vad``/``stt``/``tts`` may be omitted and default to local Silero / Whisper / Piper, because telebridge runs
  offline; a Jay file that names them still works unchanged.
* Each interruption setting has two spellings, Jay's (``interrupt_time_threshold``, ``interrupt_word_threshold``)
  and LiveKit's (``min_interruption_duration``, ``min_interruption_words``), since Jay's docs use both.
* ``max_endpointing_delay``: how long to wait when the transcript looks unfinished (a trailing "and", no
  final punctuation) before ending the caller's turn anyway.
* Phone-call behaviour Jay never had (all optional, listed under "telebridge extensions" in ``SessionConfig``):
  pause-then-confirm barge-in, backchannels, the echo guard, DTMF, silence check-ins, a call-length cap and the
  built-in ``end_call`` / ``transfer_call`` / ``send_dtmf`` tools. Their defaults keep a Jay agent's behaviour
  unchanged except where a phone line needs more care (a false interruption resumes; an hour-long call is ended
  politely).

Messages are TypedDicts, not models, so agent code keeps writing plain dict literals and OpenAI clients take
them as they are; ``SessionConfig`` still validates them through a ``TypeAdapter``.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
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


# Acknowledgements that never interrupt the agent (whole utterances made only of these, in any repetition).
DEFAULT_BACKCHANNELS: tuple[str, ...] = (
    "uh-huh", "uh huh", "mm-hmm", "mm-hm", "mhm", "mm", "hmm", "hm", "yeah", "yep", "yup", "okay", "ok", "right",
    "alright", "all right", "sure", "i see", "got it", "gotcha", "cool", "oh", "ah", "aha", "wow",
)
BUILTIN_TOOL_NAMES = ("end_call", "transfer_call", "send_dtmf")
_DTMF_KEYS = "0123456789*#"
_TRANSFER_TARGET = re.compile(r"\+[1-9][0-9]{1,14}|sips?:[^\s]+")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

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

    # --- telebridge extensions: phone-call behaviour ------------------------------------------------------------
    false_interruption_timeout: float = Field(
        1.5, ge=0,
        description="After pausing for caller speech, how long to wait for words before resuming where the caller "
        "stopped hearing (a cough, a backchannel, echo).",
    )
    backchannel_words: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BACKCHANNELS),
        description="Utterances made only of these never interrupt the agent and are not answered while it talks.",
    )
    echo_guard: bool = Field(
        True, description="Ignore caller audio that is the agent's own voice echoing back (speakerphones, line echo)."
    )
    echo_canceller: bool = Field(
        True, description="Phone calls: cancel the agent's echo with an adaptive echo canceller that follows echo "
        "appearing, changing or going mid-call (speakerphone on and off); False: the energy guard instead (as "
        "sessions whose input and output rates differ always use). Costs ~6 ms of CPU per call-second while the "
        "agent talks, ~19 ms while echo is present; needs echo_guard.",
    )
    end_of_turn_model: bool = Field(
        True, description="Ask an audio end-of-turn model (Smart Turn v3) at each pause whether the caller has "
        "finished: answer sooner when they have, wait up to max_endpointing_delay when they have not. Needs the "
        "'turn' extra; without it the fixed endpointing delays apply.",
    )
    end_of_turn_threshold: float = Field(
        0.5, gt=0, lt=1, description="Probability from the end-of-turn model above which the turn counts as complete."
    )
    silence_timeout: float | None = Field(
        None, gt=0, description="Seconds of silence after which the agent checks in (None: never)."
    )
    max_silence_reprompts: int = Field(
        2, ge=0, description="Check-ins without an answer before the agent says goodbye and hangs up."
    )
    silence_reprompt: str = Field("Are you still there?", min_length=1)
    silence_goodbye: str = Field("I haven't heard from you, so I'll end the call now. Goodbye!", min_length=1)
    max_call_duration: float | None = Field(
        3600.0, gt=0, description="Seconds after which the call is ended politely (None: no limit)."
    )
    max_duration_goodbye: str = Field(
        "I'm sorry, we've reached the time limit for this call. Thank you for calling, goodbye!", min_length=1
    )
    dtmf_interrupt_digit: str | None = Field(
        None, description="A keypad key that stops the agent at once while it speaks (e.g. \"*\")."
    )
    dtmf_terminator: str | None = Field("#", description="A key that ends a run of digits at once.")
    dtmf_inter_digit_timeout: float = Field(
        1.5, gt=0, description="Digits pressed within this many seconds of each other form one message."
    )
    on_dtmf: Callable[..., Any] | None = Field(
        None, exclude=True,
        description="async handler(input) called for every key press with session_data, call_id and digit.",
    )
    builtin_tools: list[Literal["end_call", "transfer_call", "send_dtmf"]] = Field(
        default_factory=list, description="Built-in tools the agent may call (see telebridge.tools)."
    )
    transfer_targets: dict[str, str] = Field(
        default_factory=dict,
        description="Where transfer_call may send the caller: name -> E.164 number or sip: URI. Nothing else is dialled.",
    )
    goodbye_message: str = Field("Goodbye!", min_length=1, description="Said by end_call if the agent said nothing.")
    transfer_message: str = Field(
        "Please hold while I transfer your call.", min_length=1,
        description="Said by transfer_call if the agent said nothing.",
    )
    transfer_caller_id: str | None = Field(
        None,
        description="Caller ID the transfer target sees: an E.164 number of this Twilio account (or verified with "
        "it), or \"caller\" for the caller's own number. None: this call's Twilio number (To on inbound calls, "
        "From on outbound calls).",
    )
    transfer_timeout: int | None = Field(
        None, ge=5, le=600, description="Seconds the transfer target's phone rings before giving up (Twilio: 30)."
    )
    transfer_whisper: str | None = Field(
        None, min_length=1, max_length=1000,
        description="Said to whoever answers a transfer, before the caller is connected (None: nothing).",
    )

    # --- telebridge extensions: outbound calls ------------------------------------------------------------------
    first_speaker: Literal["agent", "callee", "auto"] = Field(
        "auto",
        description="Who speaks first. auto: the agent on inbound calls, the callee on outbound calls (the greeting "
        "waits for their \"hello\", or callee_greeting_timeout of silence).",
    )
    callee_greeting_timeout: float = Field(
        3.0, ge=0, le=30, description="When the callee speaks first: seconds of silence after which the agent greets."
    )
    voicemail_message: str | None = Field(
        None,
        description="Left after the beep when an answering machine picks up (AMD verdict or the beep itself); "
        "None: hang up on machines. on_answering_machine may decide otherwise.",
    )
    on_answering_machine: Callable[..., Any] | None = Field(
        None, exclude=True,
        description="async handler({session_data, call_id, answered_by, source}) -> 'hang_up' | 'leave_message' | "
        "a message to leave | None (voicemail_message if set, else hang up). Given 2 s at most.",
    )
    detect_beep: bool = Field(
        True, description="Listen for an answering machine's beep on outbound calls (a narrow-band tone detector)."
    )

    # --- telebridge extensions: speech providers ---------------------------------------------------------------
    fallback_stt: list[STTConfig] = Field(
        default_factory=list,
        description="STT providers to use, in order, when ``stt`` fails (bad key at start, or down mid-call); the "
        "embedded Whisper comes last whenever it is installed.",
    )
    fallback_tts: list[TTSConfig] = Field(
        default_factory=list,
        description="TTS providers to use, in order, when ``tts`` fails; the embedded Piper comes last.",
    )
    provider_failure_message: str = Field(
        "Sorry, one moment.", min_length=1,
        description="Said in the fallback voice when the TTS provider fails mid-reply, before the reply goes on.",
    )

    @field_validator("dtmf_interrupt_digit", "dtmf_terminator")
    @classmethod
    def _one_key(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value not in _DTMF_KEYS):
            raise ValueError(f"must be one keypad key (0-9, * or #), got {value!r}")
        return value

    @field_validator("transfer_targets")
    @classmethod
    def _dialable_targets(cls, targets: dict[str, str]) -> dict[str, str]:
        for name, number in targets.items():
            if not name.strip():
                raise ValueError("transfer target names must not be blank")
            if not _TRANSFER_TARGET.fullmatch(number):
                raise ValueError(f"transfer target {name!r} must be an E.164 number or a sip: URI, got {number!r}")
        return targets

    @field_validator("transfer_caller_id")
    @classmethod
    def _caller_id(cls, value: str | None) -> str | None:
        if value is not None and value != "caller" and not _E164.fullmatch(value):
            raise ValueError(f"must be an E.164 number (+15551234567) or \"caller\", got {value!r}")
        return value

    @field_validator("transfer_whisper")
    @classmethod
    def _speakable(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or _XML_INVALID.search(value)):
            raise ValueError("must be text to say (not blank, no control characters)")
        return value

    @field_validator("on_dtmf", "on_answering_machine")
    @classmethod
    def _async_handler(cls, fn: Callable[..., Any] | None, info: Any) -> Callable[..., Any] | None:
        if fn is not None and not (
            inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
        ):
            raise ValueError(f"{info.field_name} must be an async function (`async def`)")
        return fn

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
