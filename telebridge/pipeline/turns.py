"""Turn-taking: who holds the floor on a phone call, decided from timestamped events.

Theory of operation
-------------------
Everything that decides *when* the agent speaks, stops, resumes or hangs up lives in this file, and nothing
else does. The engine is a plain object fed events with an explicit clock (``t``, seconds of call time: the
end of the last VAD window) and returning *actions* for the asyncio shell (``call.py``) to carry out. It never
sleeps, reads a socket or looks at a wall clock, so every rule is testable with synthetic time, including
property-based tests over random event orders (``tests/test_turns.py``).

Inputs (methods): ``speech_started``/``speech_ended`` (the VAD, after the echo guard and the noise gate),
``interim``/``transcript`` (words of an utterance, in progress / final), ``reply_audio_started`` and
``agent_finished`` (from the mark ledger), ``dtmf``, ``request_end`` (the built-in tools), ``tick``.

Outputs (actions, with the parameters and states in :mod:`.turn_actions`): :class:`Transcribe`,
:class:`StartReply`, :class:`CancelReply`, :class:`Pause`, :class:`Resume`, :class:`Interrupt`, :class:`Notify`,
:class:`HangUp`, :class:`Transfer`.

The floor
~~~~~~~~~
::

    state          event                                       -> state          actions
    LISTENING      caller speech starts                        -> USER_SPEAKING  Notify
    USER_SPEAKING  caller speech ends                          -> LISTENING      Notify, Transcribe
    LISTENING      words in, endpoint reached                  -> THINKING       StartReply
    THINKING ..    the fixed endpointing delay after a turn    -> (same)         Settle (its tools may run)
      PAUSED       the end-of-turn model ended early
    LISTENING      quiet for silence_timeout                   -> THINKING       StartReply(reprompt) | ending
    THINKING       first reply audio sent                      -> SPEAKING
    THINKING       caller speaks again (nothing heard yet)     -> USER_SPEAKING  CancelReply (words merge)
    THINKING       reply produced no audio                     -> LISTENING
    SPEAKING       reply played out                            -> LISTENING
    SPEAKING       caller speech >= time threshold, few words  -> PAUSED         Pause (stop, clear, keep rest)
    SPEAKING       caller speech >= time threshold, words      -> USER_SPEAKING  Interrupt
    SPEAKING       interrupt digit pressed                     -> LISTENING      Interrupt
    PAUSED         enough real words (interim or final)        -> USER_SPEAKING  Interrupt
                                                                  | LISTENING
    PAUSED         no words false_interruption_timeout after   -> SPEAKING       Resume (where the caller stopped
                   the caller stopped (or only a backchannel)                    hearing)
    any            call winding down, reply and goodbye done   -> ENDED          HangUp | Transfer
    LISTENING      (callee first) callee's first utterance     -> THINKING       StartReply(greeting)
                   ended, or callee_greeting_timeout passed
    any            answering machine (AMD verdict or beep)     -> (winding down) Interrupt | CancelReply, then
                                                                                 voicemail message, HangUp

Rules next to the table
~~~~~~~~~~~~~~~~~~~~~~~
* **Endpointing.** A turn ends ``max(min_silence_duration, min_endpointing_delay)`` after the caller stopped
  speaking, once every utterance of the turn is transcribed; ``max_endpointing_delay`` when the words so far
  look unfinished ("my number is", "and…"). Speech that resumes before the reply is heard merges into the turn.
* **Answer early, act when sure.** A turn the end-of-turn model ended sooner than the fixed delay is answered at
  once, but the reply's tools wait (:class:`Settle`) until the caller has been quiet for that delay: a caller who
  goes on after 0.3 s ("You have reached sales. | For new orders, press two.") merges into the turn, and the
  premature reply is dropped with no key pressed.
* **Barge-in.** Only while the agent's audio is audible and ``allow_interruptions``, never while ``floor_held``
  (keypad tones: half a key press would be a wrong key). The time threshold counts
  the caller's speech from its onset (short gaps between words included, like the VAD's speaking state) but
  never the silence after a short sound ("uh-huh" + the VAD's closing silence is not half a second of speech) (``+ echo_extra_time`` while the agent's own voice is echoing back);
  the word threshold counts interim words too, and needs at least one real word: fillers, annotations
  ("[coughs]") and utterances made only of backchannels ("uh-huh", "yeah") count zero.
* **Backchannels are not pauses.** While the interim words of an utterance are only a backchannel, pausing waits
  ``backchannel_grace`` longer, so "mm-hmm" over the agent is not even a hiccup in its speech.
* **Held words.** Caller speech during agent speech that does not interrupt (too short, interruptions off, or a
  pause that resumed) is still transcribed; unless it was only a backchannel it is answered after the reply.
* **Pause window.** Words are awaited until ``false_interruption_timeout`` after the caller stops making sound
  (a final transcript without words resumes at once); sound without words cannot hold the agent for more than
  ``max_pause``.
* **One pause per utterance.** After a resume, the same utterance cannot pause the agent again, so a long noise
  cannot make the agent stutter.
* **Turns driven by the client** (realtime API, OpenAI-style): ``commit`` ends the turn with no endpointing
  wait; ``request_reply`` answers now (or once the words are transcribed; with no new words the agent speaks
  on) unless a reply is under way; ``cancel`` stops the reply like a barge-in (or drops it if still silent).
* **DTMF.** Digits gather until the terminator or ``dtmf_inter_digit_timeout`` and then join the caller's turn
  as one user message; ``dtmf_interrupt_digit`` stops the agent at once.
* **Silence.** After ``silence_timeout`` of quiet the agent checks in; after ``max_silence_reprompts`` check-ins
  without an answer it says goodbye and hangs up. ``max_call_duration`` ends the call politely.
* **End-of-turn model.** Asked about a pause only while the caller holds the floor; not about the pause in
  which they barged in (it began while the agent was still talking): only their next pause is a candidate.
* **Who speaks first** and **answering machines**: see :mod:`.greeting`.
* **Winding down** (silence, max duration, ``end_call``, ``transfer_call``): see :mod:`.turn_ending`.
* The keypad and client-driven inputs are in :mod:`.turn_client`, the endpointing rules in :mod:`.turn_endpoint`,
  the quiet spells (ticks that return at once) in :mod:`.turn_idle`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .backchannel import WordJudge
from .greeting import GreetingTurns, PendingGreeting
from .turn_actions import (  # noqa: F401  (re-exported: the engine's vocabulary is imported from here too)
    DEFAULT_BACKCHANNELS_FALLBACK, DTMF_MESSAGE, Action, CancelReply, HangUp, Interrupt, Notify, Pause,
    ReplyKind, Resume, Settle, StartReply, State, Transcribe, Transfer, TurnParams,
)
from .turn_client import ClientTurns
from .turn_ending import EndingTurns, _Ending
from .turn_idle import IdleTurns, turn_input
from .turn_endpoint import SURE_AFTER_A_HESITATION, EndpointTurns  # noqa: F401  (re-exported)


@dataclass(slots=True)
class _Utterance:
    uid: int
    start: float
    over_agent: bool
    voiced_until: float = 0.0  # end of the last speech window: speech time is voiced_until - start  # began while the agent's audio was audible: backchannels are dropped, not answered
    words: int = 0  # interruption words heard so far (interim or final)
    backchannel: bool = False  # the latest interim was nothing but a backchannel ("mm-hmm")
    may_pause: bool = True
    ended: bool = False
    before_greeting: bool = False  # the callee's "hello": not a turn, the greeting answers it


class TurnEngine(EndpointTurns, GreetingTurns, EndingTurns, ClientTurns, IdleTurns):
    def __init__(self, params: TurnParams, *, first_turn_id: int = 1) -> None:
        self.params = params
        self.state = State.LISTENING
        self.judge = WordJudge(params.backchannels)
        self.echo_active = False  # set by the shell while the agent's own voice is echoing back
        self.floor_held = False  # set by the shell while the agent's keypad tones play: no barge-in then
        self._ids = itertools.count(first_turn_id)
        self._utt_ids = itertools.count(1)
        self._utt: _Utterance | None = None  # the caller's current utterance (VAD speech in progress)
        self._utterances: dict[int, _Utterance] = {}  # transcripts still to come
        self._pending_text: list[str] = []  # words of the caller's next turn
        self._voice_end: float | None = None  # when the caller last stopped speaking
        self._quiet_since = 0.0  # start of the current silence (for check-ins)
        self._reprompts = 0
        self.reply_turn: int | None = None
        self.reply_kind: ReplyKind = "user"
        self.reply_audible = False
        self._reply_text = ""
        self._pause_deadline = 0.0
        self._paused_at = 0.0
        self._digits: list[str] = []
        self._digit_at = 0.0
        self._ending: _Ending | None = None
        self._greeting: PendingGreeting | None = None
        self.interruptions = 0
        self._committed = False  # the client ended the user's turn: no endpointing wait (see commit)
        self._reply_requested = False  # the client asked for a reply (see request_reply)
        self.pauses = 0
        self.resumes = 0
        # The end-of-turn model on the pause after _voice_end: (voice_end, complete, probability).
        self._verdict: tuple[float, bool, float] | None = None
        self._barge: tuple[int, float] | None = None  # the utterance that interrupted, and its last speech then
        self._settle_at: float | None = None  # when the reply's turn is settled (it was ended early; see Settle)

    # --- derived --------------------------------------------------------------------------------------------
    @property
    def endpoint_delay(self) -> float:
        return max(self.params.min_silence_duration, self.params.min_endpointing_delay)

    @property
    def caller_speaking(self) -> bool:
        return self._utt is not None

    @property
    def ending(self) -> bool:
        return self._ending is not None

    @property
    def wants_interim(self) -> bool:
        """Interim transcripts of the current utterance would change a decision (the shell runs STT for them)."""
        utt = self._utt
        return (
            utt is not None
            and self.state in (State.SPEAKING, State.PAUSED)
            and self._barge_in_allowed()
            and (utt.may_pause or self.state is State.PAUSED)
        )

    def new_turn_id(self) -> int:
        return next(self._ids)

    def _barge_in_allowed(self) -> bool:
        return self.params.allow_interruptions and self._ending is None and not self.floor_held

    def _words_needed(self) -> int:
        return max(1, self.params.interrupt_word_threshold)

    def _threshold(self) -> float:
        extra = self.params.echo_extra_time if self.echo_active else 0.0
        return self.params.interrupt_time_threshold + extra

    # --- inputs ---------------------------------------------------------------------------------------------
    @turn_input
    def start_reply(self, text: str, *, say: str | None = None, kind: ReplyKind = "user",
                    settle_at: float | None = None) -> StartReply:
        """Begin a reply. The greeting passes ``text=""`` and ``say=first_message``. ``settle_at``: the turn
        ended early, and is settled at that time (see :class:`Settle`)."""
        turn = self.new_turn_id()
        self.reply_turn = turn
        self.reply_kind = kind
        self.reply_audible = False
        self._reply_text = text
        self._committed = self._reply_requested = False
        self._settle_at = settle_at
        self.state = State.THINKING
        return StartReply(turn, text, say, self.reply_kind, settled=settle_at is None)

    @turn_input
    def speech_started(self, t: float) -> list[Action]:
        if self.state is State.ENDED:
            return []
        over_agent = self.state in (State.SPEAKING, State.PAUSED)
        utt = _Utterance(next(self._utt_ids), t, over_agent, voiced_until=t,
                         before_greeting=self._greeting is not None)
        self._utt = utt
        self._utterances[utt.uid] = utt
        actions: list[Action] = [Notify("on_user_started_speaking")]
        if self.state is State.THINKING and self.reply_turn is not None and self._ending is None:
            # The caller kept talking before hearing anything: the reply was premature.
            actions.append(CancelReply(self.reply_turn))
            if self._reply_text:
                self._pending_text.insert(0, self._reply_text)
            self._clear_reply()
            self.state = State.USER_SPEAKING
        elif self.state is State.PAUSED:
            self._pause_deadline = max(self._pause_deadline, t + self.params.false_interruption_timeout)
        elif self.state is State.LISTENING:
            self.state = State.USER_SPEAKING
        return actions

    @turn_input
    def speech_ended(self, voice_end: float, audio: np.ndarray) -> list[Action]:
        """The VAD saw ``min_silence_duration`` of silence after speech that stopped at ``voice_end``."""
        if self.state is State.ENDED:
            return []
        utt = self._utt
        if utt is None:  # the VAD can end speech it started before the engine existed; give it an id now
            utt = _Utterance(next(self._utt_ids), voice_end, self.state in (State.SPEAKING, State.PAUSED))
            self._utterances[utt.uid] = utt
        utt.ended = True
        self._utt = None
        greeting = self._greeting
        if greeting is not None and utt.before_greeting:
            greeting.callee_spoke = True
            if greeting.hold_long and voice_end - utt.start >= self.params.machine_greeting_seconds:
                greeting.hold = True
        if self.state is State.PAUSED:  # the window for words runs from the end of the caller's speech
            self._pause_deadline = max(self._pause_deadline, voice_end + self.params.false_interruption_timeout)
        self._voice_end = voice_end
        self._quiet_since = voice_end
        if self.state is State.USER_SPEAKING:
            self.state = State.LISTENING
        return [Notify("on_user_stopped_speaking"), Transcribe(utt.uid, audio)]

    @turn_input
    def speech_continues(self, t: float) -> None:
        """The VAD window ending at ``t`` was speech (the time threshold counts speech, not trailing silence)."""
        if self._utt is not None:
            self._utt.voiced_until = max(self._utt.voiced_until, t)

    @property
    def current_utterance(self) -> int | None:
        return self._utt.uid if self._utt is not None else None

    @property
    def current_start(self) -> float:
        return self._utt.start if self._utt is not None else 0.0

    def is_over_agent(self, utterance_id: int) -> bool:
        """Did this utterance begin while the agent was audible? (Its words then need more confidence.)"""
        utt = self._utterances.get(utterance_id)
        return utt is not None and utt.over_agent

    @turn_input
    def interim(self, utterance_id: int, text: str, t: float) -> list[Action]:
        """Words so far of an utterance still in progress."""
        utt = self._utterances.get(utterance_id)
        if utt is None or self.state is State.ENDED:
            return []
        utt.words = max(utt.words, self.judge.count(text))
        utt.backchannel = self.judge.acknowledges(text)
        return self.tick(t)

    @turn_input
    def transcript(self, utterance_id: int, text: str, t: float) -> list[Action]:
        """The final words of an utterance."""
        utt = self._utterances.pop(utterance_id, None)
        if self.state is State.ENDED:
            return []
        text = text.strip()
        words = self.judge.count(text)
        actions: list[Action] = []
        if utt is not None:
            utt.words = max(utt.words, words)
            if self.state is State.PAUSED and utt.over_agent and self._barge_in_allowed():
                if utt.words >= self._words_needed():
                    actions += self._interrupt()
                elif self._utt is None and not self._paused_utterances_pending():
                    # Only a backchannel, a cough or a few words: the agent goes on from where it stopped.
                    actions += self._resume()
            if utt.over_agent and self.judge.is_backchannel(text):
                text = ""  # "uh-huh" while the agent talks is not a turn
            if utt.before_greeting:
                text = ""  # the callee's "hello": the greeting is the answer
        if text and self._ending is None:
            self._pending_text.append(text)
        return actions + self.tick(t)

    @turn_input
    def reply_audio_started(self, turn_id: int, t: float | None = None) -> list[Action]:
        if turn_id == self.reply_turn and self.state is not State.ENDED:
            self.reply_audible = True
            if self.state is State.THINKING:
                self.state = State.SPEAKING
        return []

    @turn_input
    def agent_finished(self, turn_id: int, t: float) -> list[Action]:
        """The reply's audio has fully played (or the reply produced no audio)."""
        if turn_id != self.reply_turn or self.state is State.ENDED:
            return []
        ending = self._ending
        if ending is not None and ending.waiting_for == turn_id:
            ending.spoke = ending.spoke or self.reply_audible
            ending.waiting_for = None
        self._clear_reply()
        self._quiet_since = t
        if self.state in (State.THINKING, State.SPEAKING, State.PAUSED):
            self.state = State.USER_SPEAKING if self._utt is not None else State.LISTENING
        if ending is not None and ending.goodbye_turn == turn_id:
            return self._final_action()
        return self.tick(t)

    # --- the clock ------------------------------------------------------------------------------------------
    def tick(self, t: float) -> list[Action]:
        if t < self._idle_until:
            return []  # nothing but a timer can act, and none is due yet (see turn_idle)
        if self.state is State.ENDED:
            return []
        if self._settle_at is not None and t >= self._settle_at and self.reply_turn is not None:
            self._settle_at = None
            return [Settle(self.reply_turn), *self.tick(t)]
        p = self.params
        if self._ending is not None:
            return self._tick_ending(t)
        if p.max_call_duration is not None and t >= p.max_call_duration:
            return self.request_end(t, "max_duration", say=p.max_duration_goodbye)
        greeting = self._greeting
        if greeting is not None:
            if self._greeting_due(greeting, t):
                self._greeting = None
                self._quiet_since = t
                return [self.start_reply("", say=greeting.text, kind="greeting")]
            return []  # nothing else happens before the greeting
        if self._digits and (t - self._digit_at >= p.dtmf_inter_digit_timeout):
            self._flush_digits(t)
        utt = self._utt
        if self.state is State.SPEAKING and utt is not None and utt.over_agent and self._barge_in_allowed():
            needed = self._threshold() + (p.backchannel_grace if utt.backchannel else 0.0)
            talking = t - utt.voiced_until <= p.speech_gap  # not in the silence after a short sound
            if utt.may_pause and talking and t - utt.start >= needed:
                if utt.words >= self._words_needed():
                    return self._interrupt()
                utt.may_pause = False
                self.state = State.PAUSED
                self.pauses += 1
                self._paused_at = t
                self._pause_deadline = t + p.false_interruption_timeout
                return [Pause(self.reply_turn)] if self.reply_turn is not None else []
        if self.state is State.PAUSED:
            words = max((u.words for u in self._utterances.values() if u.over_agent), default=0)
            if words >= self._words_needed():
                return self._interrupt()
            still_talking = self._utt is not None and t < self._paused_at + p.max_pause
            if t >= self._pause_deadline and not still_talking:
                return self._resume()
            return []
        if self.state is State.LISTENING and self.reply_turn is None:
            if self._pending_text and not self._utterances and self._voice_end is not None:
                if self._committed or t >= self._voice_end + self._endpoint_wait(self._pending_text):
                    text = " ".join(self._pending_text)
                    self._pending_text.clear()
                    self._reprompts = 0
                    settle_at = self._voice_end + self.endpoint_delay
                    early = not self._committed and t < settle_at
                    return [self.start_reply(text, settle_at=settle_at if early else None)]
            elif self._reply_requested and not self._utterances:
                return [self.start_reply("")]  # nothing new from the user: the agent speaks on
            elif (
                p.silence_timeout is not None
                and not self._pending_text
                and not self._utterances
                and not self._digits
                and t - self._quiet_since >= p.silence_timeout
            ):
                if self._reprompts < p.max_silence_reprompts:
                    self._reprompts += 1
                    return [self.start_reply("", say=p.silence_reprompt, kind="reprompt")]
                return self.request_end(t, "silence", say=p.silence_goodbye)
        return self._idle()

    # --- transitions that several inputs share --------------------------------------------------------------
    def _interrupt(self) -> list[Action]:
        turn = self.reply_turn
        if turn is None:
            return []
        self._clear_reply()
        self.interruptions += 1
        self._barge = (self._utt.uid, self._utt.voiced_until) if self._utt is not None else None
        for utt in self._utterances.values():
            utt.over_agent = False  # the interrupting words are the caller's turn now
        self.state = State.USER_SPEAKING if self._utt is not None else State.LISTENING
        return [Interrupt(turn)]

    def _resume(self) -> list[Action]:
        if self.reply_turn is None or self.state is not State.PAUSED:
            return []
        self.state = State.SPEAKING
        self.resumes += 1
        if self._utt is not None:
            self._utt.may_pause = False
        return [Resume(self.reply_turn)]

    def _paused_utterances_pending(self) -> bool:
        return any(u.over_agent for u in self._utterances.values())

    def _clear_reply(self) -> None:
        self.reply_turn = None
        self.reply_audible = False
        self._reply_text = ""
        self._settle_at = None
