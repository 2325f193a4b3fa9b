"""The turn engine, driven with synthetic time: rules one by one, then random event orders (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telebridge.pipeline.backchannel import WordJudge
from telebridge.pipeline.unfinished import looks_unfinished
from telebridge.pipeline.turns import (
    DTMF_MESSAGE,
    CancelReply,
    HangUp,
    Interrupt,
    Notify,
    Pause,
    Resume,
    StartReply,
    State,
    Transcribe,
    Transfer,
    TurnEngine,
    TurnParams,
)
from telebridge.session import DEFAULT_BACKCHANNELS

AUDIO = np.zeros(1600, dtype=np.float32)
FAST = dict(min_silence_duration=0.3, min_endpointing_delay=0.3, backchannels=DEFAULT_BACKCHANNELS)


def kinds(actions):
    return [type(a).__name__ for a in actions]


def of(actions, cls):
    return [a for a in actions if isinstance(a, cls)]


def speak(engine, start, end, step=0.032):
    """Caller speech from ``start`` to ``end`` (VAD windows every 32 ms); returns the utterance id and actions."""
    actions = engine.speech_started(start)
    uid = engine.current_utterance
    t = start
    while t + step <= end + 1e-9:
        t += step
        engine.speech_continues(t)
        actions += engine.tick(t)
    return uid, actions


def user_says(engine, start, end, text, stt_delay=0.2):
    uid, _ = speak(engine, start, end)
    engine.speech_ended(end, AUDIO)
    return engine.transcript(uid, text, end + engine.params.min_silence_duration + stt_delay)


def speaking_engine(**params):
    engine = TurnEngine(TurnParams(**{**FAST, **params}))
    (greeting,) = engine.greet("Hello and welcome to a long greeting.")
    engine.reply_audio_started(greeting.turn_id, 0.1)
    assert engine.state is State.SPEAKING
    return engine, greeting.turn_id


# --- endpointing ---------------------------------------------------------------------------------------------
def test_turn_ends_after_endpointing_delay_and_transcript():
    engine = TurnEngine(TurnParams(min_silence_duration=0.3, min_endpointing_delay=0.6))
    engine.speech_started(1.0)
    assert engine.state is State.USER_SPEAKING
    actions = engine.speech_ended(2.0, AUDIO)  # reported at 2.3, voice ended at 2.0
    assert kinds(actions) == ["Notify", "Transcribe"]
    assert engine.transcript(actions[1].utterance_id, "what time do you open", 2.4) == []  # 0.4 s < 0.6 s
    assert engine.tick(2.55) == []
    (reply,) = engine.tick(2.6)
    assert isinstance(reply, StartReply) and reply.text == "what time do you open" and reply.say is None
    assert engine.state is State.THINKING


def test_unfinished_words_wait_longer_but_bounded():
    engine = TurnEngine(TurnParams(min_silence_duration=0.3, min_endpointing_delay=0.5, max_endpointing_delay=2.0))
    assert user_says(engine, 1.0, 2.0, "My number is", stt_delay=0.0) == []
    assert engine.tick(3.9) == []  # 1.9 s after the voice ended: still waiting for the rest
    (reply,) = engine.tick(4.0)
    assert reply.text == "My number is"


def test_the_rest_of_an_unfinished_sentence_joins_the_turn():
    engine = TurnEngine(TurnParams(min_silence_duration=0.3, min_endpointing_delay=0.5, max_endpointing_delay=3.0))
    user_says(engine, 1.0, 2.0, "I'd like to book and", stt_delay=0.0)
    assert engine.tick(3.0) == []
    (reply,) = user_says(engine, 3.2, 4.0, "a cleaning.", stt_delay=0.0) + engine.tick(4.5)
    assert reply.text == "I'd like to book and a cleaning."


def test_empty_transcript_never_starts_a_reply():
    engine = TurnEngine(TurnParams())
    assert user_says(engine, 1.0, 1.2, "  ") == []
    assert engine.tick(10.0) == []


def test_speech_before_reply_is_heard_merges_into_one_turn():
    engine = TurnEngine(TurnParams(**FAST))
    (reply,) = user_says(engine, 1.0, 2.0, "I'd like to book", stt_delay=0.0)
    actions = engine.speech_started(2.5)  # the caller continues before any audio was played
    assert CancelReply(reply.turn_id) in actions
    engine.speech_continues(3.5)
    (_, transcribe) = engine.speech_ended(3.5, AUDIO)
    (second,) = engine.transcript(transcribe.utterance_id, "for Tuesday", 3.8) + engine.tick(4.0)
    assert second.text == "I'd like to book for Tuesday"


# --- barge-in ------------------------------------------------------------------------------------------------
def test_speech_over_the_agent_pauses_then_words_commit_the_interruption():
    engine, turn = speaking_engine(interrupt_time_threshold=0.5)
    uid, actions = speak(engine, 3.0, 3.45)
    assert not of(actions, Pause)
    _, actions = speak_more(engine, 3.45, 3.55)
    assert of(actions, Pause) == [Pause(turn)] and engine.state is State.PAUSED
    assert engine.wants_interim
    (interrupt,) = engine.interim(uid, "Sorry, can you", 3.7)
    assert interrupt == Interrupt(turn)
    assert engine.state is State.USER_SPEAKING and engine.reply_turn is None
    engine.speech_ended(4.5, AUDIO)
    (reply,) = engine.transcript(uid, "Sorry, can you stop?", 4.9) + engine.tick(5.0)
    assert reply.text == "Sorry, can you stop?"  # the interrupting words are the caller's next turn


def speak_more(engine, start, end, step=0.032):
    actions = []
    t = start
    while t + step <= end + 1e-9:
        t += step
        engine.speech_continues(t)
        actions += engine.tick(t)
    return engine.current_utterance, actions


def test_words_already_in_at_the_threshold_interrupt_without_pausing():
    engine, turn = speaking_engine(interrupt_time_threshold=0.5)
    uid, _ = speak(engine, 3.0, 3.3)
    assert engine.interim(uid, "Hold on", 3.3) == []  # words, but not enough speech yet
    _, actions = speak_more(engine, 3.3, 3.6)
    assert of(actions, Interrupt) == [Interrupt(turn)] and not of(actions, Pause)


def test_no_words_within_the_window_resumes_and_the_same_noise_cannot_pause_again():
    engine, turn = speaking_engine(interrupt_time_threshold=0.5, false_interruption_timeout=1.5, max_pause=3.0)
    uid, actions = speak(engine, 3.0, 3.6)
    assert of(actions, Pause) == [Pause(turn)]
    pause_at = 3.6
    assert engine.interim(uid, "[coughs]", 3.9) == []
    _, actions = speak_more(engine, 3.6, pause_at + 2.9)
    assert not of(actions, Resume)  # still making sound: the window for words is open
    _, actions = speak_more(engine, pause_at + 2.9, pause_at + 3.1)
    assert of(actions, Resume) == [Resume(turn)] and engine.state is State.SPEAKING  # max_pause reached
    _, actions = speak_more(engine, pause_at + 3.1, pause_at + 5.0)  # the noise goes on: no stutter
    assert not of(actions, Pause)
    engine.speech_ended(pause_at + 5.0, AUDIO)
    assert engine.transcript(uid, "", pause_at + 5.3) == []
    assert engine.agent_finished(turn, 12.0) == [] and engine.tick(15.0) == []  # nothing to answer


def test_the_window_for_words_runs_from_the_end_of_speech():
    engine, turn = speaking_engine(interrupt_time_threshold=0.5, false_interruption_timeout=1.5)
    uid, actions = speak(engine, 3.0, 3.6)
    assert of(actions, Pause)
    _, _ = speak_more(engine, 3.6, 4.5)
    engine.speech_ended(4.5, AUDIO)
    assert engine.tick(5.9) == []
    assert engine.tick(6.0) == [Resume(turn)]


def test_a_backchannel_that_paused_resumes_as_soon_as_it_is_transcribed():
    engine, turn = speaking_engine(interrupt_time_threshold=0.5)
    uid, actions = speak(engine, 3.0, 3.6)
    assert of(actions, Pause)
    engine.speech_ended(3.6, AUDIO)
    assert engine.transcript(uid, "Mm-hmm.", 4.0) == [Resume(turn)]
    assert engine.agent_finished(turn, 8.0) == [] and engine.tick(10.0) == []  # "mm-hmm" is not a turn


def test_backchannel_interims_hold_the_pause_back():
    engine, turn = speaking_engine(interrupt_time_threshold=0.5, backchannel_grace=0.5)
    uid, _ = speak(engine, 3.0, 3.3)
    engine.interim(uid, "Mm-hmm", 3.3)
    _, actions = speak_more(engine, 3.3, 3.9)
    assert not of(actions, Pause)  # 0.9 s, still within threshold + grace
    _, actions = speak_more(engine, 3.9, 4.1)
    assert of(actions, Pause) == [Pause(turn)]


def test_short_speech_over_the_agent_is_answered_after_it():
    engine, turn = speaking_engine(interrupt_time_threshold=0.5)
    assert not of(user_says(engine, 3.0, 3.3, "Thursday"), Pause)
    assert engine.state is State.SPEAKING
    (reply,) = engine.agent_finished(turn, 6.0)
    assert reply.text == "Thursday"


def test_backchannels_over_the_agent_are_not_turns():
    engine, turn = speaking_engine()
    assert user_says(engine, 3.0, 3.3, "Uh-huh.") == []
    assert user_says(engine, 4.0, 4.2, "yeah, okay") == []
    assert engine.agent_finished(turn, 6.0) == [] and engine.tick(9.0) == []


def test_without_interruptions_caller_words_are_answered_after_the_agent():
    engine, turn = speaking_engine(allow_interruptions=False)
    actions = user_says(engine, 1.0, 3.0, "hello? can you hear me?")
    assert not of(actions, Pause) and not of(actions, Interrupt)
    assert engine.tick(4.0) == []
    (reply,) = engine.agent_finished(turn, 5.0)
    assert isinstance(reply, StartReply) and reply.text == "hello? can you hear me?"


def test_word_threshold_counts_interim_words():
    engine, turn = speaking_engine(interrupt_word_threshold=3)
    uid, actions = speak(engine, 3.0, 3.6)
    assert of(actions, Pause)
    assert engine.interim(uid, "Wait, no", 3.8) == []
    assert engine.interim(uid, "Wait, no, stop", 4.1) == [Interrupt(turn)]


def test_echo_raises_the_time_threshold():
    engine, turn = speaking_engine(interrupt_time_threshold=0.5, echo_extra_time=0.3)
    engine.echo_active = True
    _, actions = speak(engine, 3.0, 3.7)
    assert not of(actions, Pause)
    _, actions = speak_more(engine, 3.7, 3.85)
    assert of(actions, Pause)


def test_replies_not_yet_audible_are_cancelled_not_interrupted():
    engine = TurnEngine(TurnParams(**FAST))
    (reply,) = user_says(engine, 1.0, 2.0, "Hi", stt_delay=0.0)
    assert engine.dtmf("5", 2.5) == []
    assert engine.state is State.THINKING


# --- DTMF ----------------------------------------------------------------------------------------------------
def test_digits_form_one_message_after_the_inter_digit_timeout():
    engine = TurnEngine(TurnParams(**FAST, dtmf_inter_digit_timeout=1.0))
    for i, digit in enumerate("123"):
        assert engine.dtmf(digit, 1.0 + 0.3 * i) == []
    assert engine.tick(2.5) == []
    (reply,) = engine.tick(2.7)
    assert reply.text == DTMF_MESSAGE.format(digits="123")


def test_terminator_sends_digits_at_once():
    engine = TurnEngine(TurnParams(**FAST))
    engine.dtmf("4", 1.0)
    engine.dtmf("2", 1.1)
    (reply,) = engine.dtmf("#", 1.2)
    assert reply.text == DTMF_MESSAGE.format(digits="42")


def test_interrupt_digit_stops_the_agent():
    engine, turn = speaking_engine(dtmf_interrupt_digit="*")
    assert engine.dtmf("5", 2.0) == []  # other keys wait for the agent to finish
    assert engine.dtmf("*", 2.2) == [Interrupt(turn)]
    assert engine.state is State.LISTENING


# --- silence, time limit, ending ------------------------------------------------------------------------------
def play(engine, reply, t):
    engine.reply_audio_started(reply.turn_id, t)
    return engine.agent_finished(reply.turn_id, t + 1.0)


def test_silence_check_ins_then_goodbye_and_hang_up():
    engine = TurnEngine(TurnParams(**FAST, silence_timeout=5.0, max_silence_reprompts=2, silence_reprompt="Hello?",
                                   silence_goodbye="Bye now."))
    assert engine.tick(4.9) == []
    (check,) = engine.tick(5.0)
    assert (check.say, check.kind) == ("Hello?", "reprompt")
    assert play(engine, check, 5.2) == []  # played out at 6.2
    assert engine.tick(11.1) == []
    (check2,) = engine.tick(11.25)
    play(engine, check2, 11.3)  # played out at 12.3
    (goodbye,) = engine.tick(17.35)
    assert (goodbye.say, goodbye.kind) == ("Bye now.", "goodbye")
    assert play(engine, goodbye, 17.4) == [HangUp("silence")]
    assert engine.state is State.ENDED
    assert engine.speech_started(20.0) == [] and engine.tick(100.0) == [] and engine.dtmf("1", 101.0) == []


def test_an_answer_resets_the_check_ins():
    engine = TurnEngine(TurnParams(**FAST, silence_timeout=5.0, max_silence_reprompts=1))
    (check,) = engine.tick(5.0)
    play(engine, check, 5.1)
    (reply,) = user_says(engine, 7.0, 8.0, "Yes, I'm here", stt_delay=0.0) + engine.tick(8.5)
    play(engine, reply, 8.6)
    (check2,) = engine.tick(14.6)
    assert check2.kind == "reprompt"


def test_max_duration_lets_the_reply_finish_then_says_goodbye():
    engine, turn = speaking_engine(max_call_duration=10.0, max_duration_goodbye="Time is up.")
    assert engine.tick(10.0) == []  # the agent is mid-sentence
    (goodbye,) = engine.agent_finished(turn, 11.0)
    assert goodbye.say == "Time is up."
    assert play(engine, goodbye, 11.1) == [HangUp("max_duration")]


def test_end_call_after_a_spoken_goodbye_hangs_up_without_another():
    engine = TurnEngine(TurnParams(**FAST))
    (reply,) = user_says(engine, 1.0, 2.0, "bye", stt_delay=0.0)
    assert engine.request_end(2.5, "end_call", say="Goodbye!", only_if_silent=True) == []
    assert play(engine, reply, 2.6) == [HangUp("end_call")]


def test_end_call_with_nothing_said_adds_the_goodbye():
    engine = TurnEngine(TurnParams(**FAST))
    (reply,) = user_says(engine, 1.0, 2.0, "bye", stt_delay=0.0)
    engine.request_end(2.5, "end_call", say="Goodbye!", only_if_silent=True)
    (goodbye,) = engine.agent_finished(reply.turn_id, 2.6)  # the reply was only a tool call: no audio
    assert goodbye.say == "Goodbye!"
    assert play(engine, goodbye, 2.7) == [HangUp("end_call")]


def test_transfer_and_no_barge_in_while_winding_down():
    engine, turn = speaking_engine()
    engine.request_end(2.0, "transfer_call", say="Hold on.", only_if_silent=True, transfer_to="+15557654321")
    _, actions = speak(engine, 3.0, 5.0)
    assert not of(actions, Pause) and not of(actions, Interrupt)
    assert engine.agent_finished(turn, 5.5) == []  # the caller is still talking: let them finish
    engine.speech_ended(5.6, AUDIO)
    assert engine.tick(6.0) == [Transfer("+15557654321", "transfer_call")]


def test_winding_down_resumes_a_paused_reply():
    engine, turn = speaking_engine()
    _, actions = speak(engine, 3.0, 3.6)
    assert of(actions, Pause)
    assert engine.request_end(3.7, "max_duration", say="Bye.") == [Resume(turn)]


# --- words ---------------------------------------------------------------------------------------------------
def test_word_judge_and_unfinished_sentences():
    judge = WordJudge(DEFAULT_BACKCHANNELS)
    assert [judge.count(t) for t in ("Uh-huh.", "Mm-hmm, yeah.", "[coughs]", "Ha ha ha.", "um", "")] == [0] * 6
    assert judge.count("Okay, but wait.") == 3 and judge.count("Sorry, can you stop?") == 4
    assert looks_unfinished("My number is") and looks_unfinished("Tuesday and...") and looks_unfinished("so,")
    assert not looks_unfinished("Thank you.") and not looks_unfinished("Is it open?") and not looks_unfinished("")


# --- random event orders -------------------------------------------------------------------------------------
TEXTS = ["", "uh-huh", "Mm-hmm.", "[coughs]", "okay", "Wait, stop please", "Tuesday at ten", "my number is"]
BACKCHANNEL_TEXTS = ["", "uh-huh", "Mm-hmm.", "[coughs]", "okay", "yeah right"]
EVENTS = ["start", "continue", "end", "interim", "final", "audible", "played", "dtmf", "tick", "end_call"]


class Shell:
    """Plays the asyncio shell's part for the engine and checks every action against the rules."""

    def __init__(self, engine: TurnEngine, texts: list[str]) -> None:
        self.engine = engine
        self.texts = texts
        self.t = 0.0
        self.reply: int | None = None
        self.audible = False
        self.paused = False
        self.untranscribed: list[int] = []
        self.transcribe_ids: set[int] = set()
        self.finals = 0
        self.ended = False
        self.interrupt_key_pressed = False

    def apply(self, actions):
        for action in actions:
            assert not self.ended, f"{action} after the call ended"
            if isinstance(action, Transcribe):
                assert action.utterance_id not in self.transcribe_ids
                self.transcribe_ids.add(action.utterance_id)
                self.untranscribed.append(action.utterance_id)
            elif isinstance(action, StartReply):
                assert self.reply is None, "two replies at once"
                self.reply, self.audible, self.paused = action.turn_id, False, False
            elif isinstance(action, CancelReply):
                assert action.turn_id == self.reply and not self.audible
                self.reply = None
            elif isinstance(action, Pause):
                assert action.turn_id == self.reply and self.audible and not self.paused
                assert self.engine.params.allow_interruptions
                self.paused = True
            elif isinstance(action, Resume):
                assert action.turn_id == self.reply and self.paused
                self.paused = False
            elif isinstance(action, Interrupt):
                assert action.turn_id == self.reply and self.audible
                assert self.engine.params.allow_interruptions or self.interrupt_key_pressed
                self.reply, self.paused = None, False
            elif isinstance(action, (HangUp, Transfer)):
                assert self.reply is None
                self.ended = True
            else:
                assert isinstance(action, Notify)
        engine = self.engine
        if engine.state in (State.SPEAKING, State.PAUSED, State.THINKING):
            assert engine.reply_turn == self.reply is not None
        if engine.state is State.PAUSED:
            assert self.paused
        if engine.state is State.ENDED:
            assert self.ended

    def step(self, event: str, choice: int, dt: float) -> None:
        e = self.engine
        self.t += dt
        t = self.t
        if event == "start" and not e.caller_speaking:
            self.apply(e.speech_started(t))
        elif event == "continue" and e.caller_speaking:
            e.speech_continues(t)
            self.apply(e.tick(t))
        elif event == "end" and e.caller_speaking:
            self.apply(e.speech_ended(t, AUDIO))
        elif event == "interim" and e.current_utterance is not None:
            self.apply(e.interim(e.current_utterance, self.texts[choice % len(self.texts)], t))
        elif event == "final" and self.untranscribed:
            uid = self.untranscribed.pop(choice % len(self.untranscribed))
            self.apply(e.transcript(uid, self.texts[choice % len(self.texts)], t))
        elif event == "audible" and self.reply is not None and not self.paused and not self.audible:
            self.audible = True
            self.apply(e.reply_audio_started(self.reply, t))
        elif event == "played" and self.reply is not None and not self.paused:
            turn, self.reply = self.reply, None
            self.apply(e.agent_finished(turn, t))
        elif event == "dtmf":
            digit = "0123456789*#"[choice % 12]
            if digit == e.params.dtmf_interrupt_digit:
                self.interrupt_key_pressed = True
            self.apply(e.dtmf(digit, t))
        elif event == "end_call":
            self.apply(e.request_end(t, "end_call", say="Bye.", only_if_silent=bool(choice % 2)))
        else:
            self.apply(e.tick(t))

    def drain(self) -> None:
        e = self.engine
        for _ in range(50):
            self.t += 2.0
            if e.caller_speaking:
                self.apply(e.speech_ended(self.t, AUDIO))
            while self.untranscribed:
                self.apply(e.transcript(self.untranscribed.pop(), "", self.t))
            if self.reply is not None:
                if self.paused:
                    self.apply(e.tick(self.t + 10.0))
                    continue
                if not self.audible:
                    self.audible = True
                    self.apply(e.reply_audio_started(self.reply, self.t))
                turn, self.reply = self.reply, None
                self.apply(e.agent_finished(turn, self.t + 1.0))
            self.apply(e.tick(self.t))


params_strategy = st.builds(
    TurnParams,
    min_silence_duration=st.sampled_from([0.3, 0.55]),
    min_endpointing_delay=st.sampled_from([0.2, 0.5]),
    allow_interruptions=st.booleans(),
    interrupt_time_threshold=st.sampled_from([0.0, 0.3, 0.5]),
    interrupt_word_threshold=st.integers(0, 3),
    false_interruption_timeout=st.sampled_from([0.5, 1.5]),
    silence_timeout=st.sampled_from([None, 4.0]),
    max_silence_reprompts=st.integers(0, 2),
    max_call_duration=st.sampled_from([None, 30.0]),
    dtmf_interrupt_digit=st.sampled_from([None, "*"]),
    backchannels=st.just(DEFAULT_BACKCHANNELS),
)
steps_strategy = st.lists(
    st.tuples(st.sampled_from(EVENTS), st.integers(0, 50), st.floats(0.0, 1.2)), min_size=1, max_size=80
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=params_strategy, steps=steps_strategy)
def test_random_event_orders_keep_every_rule(params, steps):
    shell = Shell(TurnEngine(params), TEXTS)
    greeting = shell.engine.greet("Hi.")
    shell.apply(greeting)
    for event, choice, dt in steps:
        shell.step(event, choice, dt)
    shell.drain()
    engine = shell.engine
    assert engine.state in (State.LISTENING, State.ENDED)
    if engine.state is State.LISTENING and not engine.ending:
        assert not engine._pending_text, "caller words left unanswered"


@settings(max_examples=200, deadline=None)
@given(params=params_strategy, steps=steps_strategy)
def test_backchannels_and_noise_never_interrupt(params, steps):
    shell = Shell(TurnEngine(params), BACKCHANNEL_TEXTS)
    shell.apply(shell.engine.greet("Hi."))
    interrupts = []
    original = shell.apply

    def watch(actions):
        interrupts.extend(a for a in actions if isinstance(a, Interrupt))
        original(actions)

    shell.apply = watch  # type: ignore[method-assign]
    for event, choice, dt in steps:
        shell.step(event, choice, dt)
    assert not interrupts or shell.interrupt_key_pressed


def test_vowelless_sounds_never_count_as_words():
    from telebridge.pipeline.backchannel import WordJudge

    judge = WordJudge(["uh-huh", "mm-hmm", "yeah", "okay", "right"])
    for sound in ["Mf.", "MMM.", "Mm-hm.", "mhm", "Shh!", "Hmmm?", "Mm-hmm, yeah."]:
        assert judge.count(sound) == 0, sound
    assert judge.count("Hmm, wait a second") == 3
    assert judge.count("Try my 2 dogs") == 4  # y is a vowel here; digits are words


# --- quiet spells (turn_idle): ticks that return at once must be the ticks that would do nothing --------------
class FullTick(TurnEngine):
    """The engine without its quiet-spell shortcut: every tick runs in full."""

    def _idle(self):
        return []


def engine_state(engine):
    return {k: v for k, v in vars(engine).items() if k not in ("_idle_until", "judge", "_ids", "_utt_ids")} | {
        "next_turn": engine.new_turn_id(), "next_utterance": next(engine._utt_ids)}


quiet_steps = st.lists(
    st.tuples(st.sampled_from(EVENTS + ["tick"] * 6), st.integers(0, 50), st.floats(0.0, 3.0)),
    min_size=1, max_size=120,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=params_strategy, steps=quiet_steps, greet=st.booleans())
def test_quiet_spells_change_nothing(params, steps, greet):
    """The same events through the engine and through one that never skips a tick: the same actions at every step,
    the same state at the end -- with timers (silence check-ins, max duration) due at random times."""
    fast, full = Shell(TurnEngine(params), TEXTS), Shell(FullTick(params), TEXTS)
    for shell in (fast, full):
        seen = []
        original = shell.apply
        shell.apply = lambda actions, original=original, seen=seen: (seen.append(list(actions)), original(actions))
        shell.seen = seen
        if greet:
            shell.apply(shell.engine.greet("Hi."))
    for event, choice, dt in steps:
        for shell in (fast, full):
            shell.apply(shell.engine.tick(shell.t))  # (a tick that finds the engine idle notes a quiet spell)
        for shell in (fast, full):
            shell.step(event, choice, dt)
        assert fast.seen == full.seen
    fast.drain()
    full.drain()
    assert fast.seen == full.seen
    assert engine_state(fast.engine) == engine_state(full.engine)


def test_a_quiet_engine_skips_ticks_until_its_timer_then_acts_on_time():
    engine = TurnEngine(TurnParams(**FAST, silence_timeout=4.0, max_call_duration=30.0))
    assert engine.tick(0.032) == [] and engine._idle_until == 4.0 - 1e-6  # quiet since 0: the check-in is due at 4 s
    assert engine.tick(3.99) == []
    (reprompt,) = engine.tick(4.0)
    assert isinstance(reprompt, StartReply) and reprompt.kind == "reprompt"
    assert engine._idle_until == float("-inf")  # (an input: the reply started)
    engine.reply_audio_started(reprompt.turn_id, 4.1)
    assert engine.tick(4.2) == [] and engine._idle_until == 30.0  # the agent talks: only max duration is a timer
    engine.agent_finished(reprompt.turn_id, 5.0)
    assert engine.tick(5.1) == [] and engine._idle_until == 9.0 - 1e-6
    engine.speech_started(6.0)  # an input ends the quiet spell at once
    assert engine._idle_until == float("-inf")
    assert engine.tick(6.1) == [] and engine._idle_until == float("-inf")  # the caller speaks: not quiet


def test_every_engine_input_ends_a_quiet_spell():
    """Each public method that may change the engine is marked an input (see turn_idle), so none can leave a stale
    quiet spell behind; new methods must be marked too, or listed here as read-only."""
    import inspect

    read_only = {"tick", "new_turn_id", "is_over_agent", "idle_at"}
    for name, member in inspect.getmembers(TurnEngine, inspect.isfunction):
        if not name.startswith("_") and name not in read_only:
            assert getattr(member, "turn_input", False), f"TurnEngine.{name} is not marked @turn_input"
