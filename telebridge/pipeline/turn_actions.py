"""The turn engine's vocabulary: its parameters (:class:`TurnParams`), the floor's states (:class:`State`) and the
actions it returns for the asyncio shell to carry out (:class:`Transcribe` … :class:`Transfer`). The rules that
use them are in :mod:`.turns` (and :mod:`.greeting` for who speaks first)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from ..session import SessionConfig

DEFAULT_BACKCHANNELS_FALLBACK = ("uh-huh", "mm-hmm", "yeah", "okay", "right")
DTMF_MESSAGE = "[The caller pressed {digits} on the keypad]"

ReplyKind = Literal["user", "greeting", "reprompt", "goodbye"]


class State(Enum):
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    SPEAKING = "speaking"
    PAUSED = "paused"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class TurnParams:
    min_silence_duration: float = 0.55
    min_endpointing_delay: float = 0.5
    max_endpointing_delay: float = 3.0
    allow_interruptions: bool = True
    interrupt_time_threshold: float = 0.5
    interrupt_word_threshold: int = 0
    false_interruption_timeout: float = 1.5
    max_pause: float = 4.0  # a caller who keeps making sound without words cannot hold the agent longer
    echo_extra_time: float = 0.2
    speech_gap: float = 0.15  # a pause this short inside the caller's speech still counts as speech
    backchannel_grace: float = 0.5  # extra speech time before pausing while the words so far are a backchannel
    backchannels: tuple[str, ...] = DEFAULT_BACKCHANNELS_FALLBACK
    silence_timeout: float | None = None
    max_silence_reprompts: int = 2
    silence_reprompt: str = "Are you still there?"
    silence_goodbye: str = "Goodbye!"
    max_call_duration: float | None = None
    max_duration_goodbye: str = "We've reached the time limit for this call. Goodbye!"
    ending_grace: float = 10.0  # longest wait for the caller to stop before a goodbye is said anyway
    dtmf_interrupt_digit: str | None = None
    dtmf_terminator: str | None = "#"
    dtmf_inter_digit_timeout: float = 1.5
    machine_greeting_seconds: float = 2.5  # a first "hello" longer than this sounds recorded
    greeting_max_wait: float = 10.0  # the greeting is said by timeout + this, whatever the callee does

    @classmethod
    def from_config(cls, cfg: SessionConfig) -> TurnParams:
        return cls(
            min_silence_duration=cfg.vad.min_silence_duration,
            min_endpointing_delay=cfg.min_endpointing_delay,
            max_endpointing_delay=cfg.max_endpointing_delay,
            allow_interruptions=cfg.allow_interruptions,
            interrupt_time_threshold=cfg.interrupt_time_threshold,
            interrupt_word_threshold=cfg.interrupt_word_threshold,
            false_interruption_timeout=cfg.false_interruption_timeout,
            backchannels=tuple(cfg.backchannel_words),
            silence_timeout=cfg.silence_timeout,
            max_silence_reprompts=cfg.max_silence_reprompts,
            silence_reprompt=cfg.silence_reprompt,
            silence_goodbye=cfg.silence_goodbye,
            max_call_duration=cfg.max_call_duration,
            max_duration_goodbye=cfg.max_duration_goodbye,
            dtmf_interrupt_digit=cfg.dtmf_interrupt_digit,
            dtmf_terminator=cfg.dtmf_terminator,
            dtmf_inter_digit_timeout=cfg.dtmf_inter_digit_timeout,
        )


# --- actions -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Transcribe:
    utterance_id: int
    audio: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class StartReply:
    """Answer ``text`` (the caller's turn) with the LLM, or speak ``say`` verbatim when it is set.

    ``settled``: the turn is over for sure, so the reply's tools may run. A turn the end-of-turn model ended
    early is not, yet: the reply is made (and spoken) at once, but its tools wait for :class:`Settle`."""

    turn_id: int
    text: str
    say: str | None = None
    kind: ReplyKind = "user"
    settled: bool = True


@dataclass(frozen=True, slots=True)
class Settle:
    """The caller has now been quiet for the fixed endpointing delay after the turn this reply answers: its tools
    (keys pressed, transfers, the agent's own functions) may run. Until then the caller may still go on, and the
    reply be dropped with nothing done."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class CancelReply:
    """Drop a reply the caller has not heard any of; its user text is merged into the next turn."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class Pause:
    """Caller speech over the agent: stop sending and clear Twilio's buffer, but keep the unplayed rest."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class Resume:
    """It was not an interruption: play the paused reply on from where the caller stopped hearing it."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The caller barged in: stop (if not paused already), cancel the reply, keep only what was heard."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class Notify:
    event: str  # on_user_started_speaking / on_user_stopped_speaking


@dataclass(frozen=True, slots=True)
class HangUp:
    reason: str


@dataclass(frozen=True, slots=True)
class Transfer:
    target: str
    reason: str = "transfer_call"


Action = Transcribe | StartReply | Settle | CancelReply | Pause | Resume | Interrupt | Notify | HangUp | Transfer
