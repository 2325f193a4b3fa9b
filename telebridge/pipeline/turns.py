"""Turn-taking: who holds the floor, decided from timestamped events.

Theory of operation
-------------------
The engine is a plain object fed events with an explicit clock (``t`` in seconds of call time) and returning
*actions* for the asyncio shell to carry out. It never sleeps, reads a socket or looks at a wall clock, so every
rule below is testable with synthetic time.

States::

    LISTENING  --speech_started-->  USER_SPEAKING
    USER_SPEAKING --speech_ended--> LISTENING  (+ Transcribe)
    LISTENING --transcript, endpoint reached--> RESPONDING (+ StartReply)
    RESPONDING --agent_finished--> LISTENING
    RESPONDING --caller speaks >= interrupt_time_threshold--> USER_SPEAKING (+ Interrupt)

* **Endpointing.** The VAD reports the end of speech after ``min_silence_duration`` of silence; the turn ends
  once the caller has been silent for ``max(min_silence_duration, min_endpointing_delay)`` *and* the
  utterance's transcript is in. Speech that resumes before that merges into the same turn.
* **Replies that have not been heard yet.** If the caller starts talking again while a reply is being prepared
  (no audio played), the reply is dropped and the caller's words join the turn.
* **Barge-in.** While the agent's audio is playing, caller speech lasting ``interrupt_time_threshold`` seconds
  interrupts it (when ``allow_interruptions``). Otherwise the caller's words are held and answered after the
  agent finishes.
* Empty transcripts (coughs, line noise that got past the VAD) never start a reply.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum

import numpy as np


class State(Enum):
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    RESPONDING = "responding"


@dataclass(frozen=True, slots=True)
class TurnParams:
    min_silence_duration: float = 0.55
    min_endpointing_delay: float = 0.5
    allow_interruptions: bool = True
    interrupt_time_threshold: float = 0.5


# --- actions -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Transcribe:
    utterance_id: int
    audio: np.ndarray = field(repr=False)


@dataclass(frozen=True, slots=True)
class StartReply:
    turn_id: int
    text: str


@dataclass(frozen=True, slots=True)
class CancelReply:
    """Drop a reply the caller has not heard any of; its user text is merged into the next turn."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The caller barged in: stop sending, clear Twilio's buffer, keep only what was heard."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class Notify:
    event: str  # on_user_started_speaking / on_user_stopped_speaking


Action = Transcribe | StartReply | CancelReply | Interrupt | Notify


class TurnEngine:
    def __init__(self, params: TurnParams, *, first_turn_id: int = 1) -> None:
        self.params = params
        self.state = State.LISTENING
        self._ids = itertools.count(first_turn_id)
        self._utterances = itertools.count(1)
        self._awaiting: set[int] = set()  # utterances sent to STT, transcript not back yet
        self._pending_text: list[str] = []  # transcribed words of the turn in progress
        self._voice_end: float | None = None  # when the caller last stopped speaking
        self._speech_start: float | None = None
        self.reply_turn: int | None = None  # the reply being prepared or played
        self.reply_audible = False  # some of the reply's audio has been sent to the caller
        self._reply_text = ""
        self.held_during_reply = False  # caller spoke during a non-interruptible reply

    @property
    def endpoint_delay(self) -> float:
        return max(self.params.min_silence_duration, self.params.min_endpointing_delay)

    def new_turn_id(self) -> int:
        return next(self._ids)

    # --- inputs ---------------------------------------------------------------------------------------------
    def speech_started(self, t: float) -> list[Action]:
        self._speech_start = t
        actions: list[Action] = [Notify("on_user_started_speaking")]
        if self.state is State.RESPONDING and self.reply_turn is not None and not self.reply_audible:
            # Caller kept talking before hearing anything: the reply was premature.
            actions.append(CancelReply(self.reply_turn))
            if self._reply_text:
                self._pending_text.insert(0, self._reply_text)
            self.reply_turn = None
            self.state = State.USER_SPEAKING
        elif self.state is State.RESPONDING:
            if not self.params.allow_interruptions:
                self.held_during_reply = True
            # Barge-in is decided on tick() once the speech has lasted long enough.
        else:
            self.state = State.USER_SPEAKING
        return actions

    def speech_ended(self, voice_end: float, audio: np.ndarray) -> list[Action]:
        """The VAD saw ``min_silence_duration`` of silence after speech that stopped at ``voice_end``."""
        self._voice_end = voice_end
        self._speech_start = None
        utt = next(self._utterances)
        self._awaiting.add(utt)
        if self.state is State.USER_SPEAKING:
            self.state = State.LISTENING
        return [Notify("on_user_stopped_speaking"), Transcribe(utt, audio)]

    def transcript(self, utterance_id: int, text: str, t: float) -> list[Action]:
        self._awaiting.discard(utterance_id)
        text = text.strip()
        if text:
            self._pending_text.append(text)
        return self.tick(t)

    def reply_audio_started(self, turn_id: int) -> None:
        if turn_id == self.reply_turn:
            self.reply_audible = True

    def agent_finished(self, turn_id: int, t: float) -> list[Action]:
        """The reply's audio has fully played (or the reply produced no audio)."""
        if turn_id != self.reply_turn:
            return []
        self.reply_turn = None
        self.reply_audible = False
        self.held_during_reply = False
        if self.state is State.RESPONDING:
            self.state = State.USER_SPEAKING if self._speech_start is not None else State.LISTENING
        return self.tick(t)

    def tick(self, t: float) -> list[Action]:
        actions: list[Action] = []
        if (
            self.state is State.RESPONDING
            and self.reply_turn is not None
            and self.reply_audible
            and self.params.allow_interruptions
            and self._speech_start is not None
            and t - self._speech_start >= self.params.interrupt_time_threshold
        ):
            actions.append(Interrupt(self.reply_turn))
            self.reply_turn = None
            self.reply_audible = False
            self.state = State.USER_SPEAKING
            return actions
        if (
            self.state is State.LISTENING
            and self.reply_turn is None
            and self._pending_text
            and not self._awaiting
            and self._voice_end is not None
            and t >= self._voice_end + self.endpoint_delay
        ):
            text = " ".join(self._pending_text)
            self._pending_text.clear()
            actions.append(self.start_reply(text))
        return actions

    def start_reply(self, text: str) -> StartReply:
        """Begin a reply to ``text`` (the greeting passes ``""``: there is nothing to merge back if cancelled)."""
        turn = self.new_turn_id()
        self.reply_turn = turn
        self.reply_audible = False
        self._reply_text = text
        self.state = State.RESPONDING
        return StartReply(turn, text)
