"""The turn engine, driven with synthetic time."""

import numpy as np

from telebridge.pipeline.turns import (
    CancelReply,
    Interrupt,
    Notify,
    StartReply,
    State,
    Transcribe,
    TurnEngine,
    TurnParams,
)

AUDIO = np.zeros(1600, dtype=np.float32)


def kinds(actions):
    return [type(a).__name__ for a in actions]


def user_says(engine, start, end, text, stt_delay=0.2):
    engine.speech_started(start)
    params = engine.params
    actions = engine.speech_ended(end, AUDIO)
    utt = next(a for a in actions if isinstance(a, Transcribe)).utterance_id
    return engine.transcript(utt, text, end + params.min_silence_duration + stt_delay)


def test_turn_ends_after_endpointing_delay_and_transcript():
    engine = TurnEngine(TurnParams(min_silence_duration=0.3, min_endpointing_delay=0.6))
    engine.speech_started(1.0)
    assert engine.state is State.USER_SPEAKING
    actions = engine.speech_ended(2.0, AUDIO)  # reported at 2.3, voice ended at 2.0
    assert kinds(actions) == ["Notify", "Transcribe"]
    assert engine.transcript(actions[1].utterance_id, "what time do you open", 2.4) == []  # 0.4 s < 0.6 s
    assert engine.tick(2.55) == []
    (reply,) = engine.tick(2.6)
    assert isinstance(reply, StartReply) and reply.text == "what time do you open"
    assert engine.state is State.RESPONDING


def test_empty_transcript_never_starts_a_reply():
    engine = TurnEngine(TurnParams())
    assert user_says(engine, 1.0, 1.2, "  ") == []
    assert engine.tick(10.0) == []


def test_speech_before_reply_is_heard_merges_into_one_turn():
    engine = TurnEngine(TurnParams(min_silence_duration=0.3, min_endpointing_delay=0.3))
    (reply,) = user_says(engine, 1.0, 2.0, "I'd like to book", stt_delay=0.0)
    actions = engine.speech_started(2.5)  # the caller continues before any audio was played
    assert CancelReply(reply.turn_id) in actions
    (second,) = user_says(engine, 2.5, 3.5, "for Tuesday", stt_delay=0.0)
    assert second.text == "I'd like to book for Tuesday"


def test_barge_in_after_interrupt_time_threshold():
    engine = TurnEngine(TurnParams(interrupt_time_threshold=0.5))
    greeting = engine.start_reply("")
    engine.reply_audio_started(greeting.turn_id)
    assert engine.speech_started(3.0) == [Notify("on_user_started_speaking")]
    assert engine.tick(3.4) == []
    assert engine.tick(3.5) == [Interrupt(greeting.turn_id)]
    assert engine.state is State.USER_SPEAKING


def test_short_noise_during_agent_speech_does_not_interrupt():
    engine = TurnEngine(TurnParams(interrupt_time_threshold=0.5))
    greeting = engine.start_reply("")
    engine.reply_audio_started(greeting.turn_id)
    engine.speech_started(3.0)
    engine.speech_ended(3.2, AUDIO)
    assert engine.tick(4.0) == []
    assert engine.state is State.RESPONDING


def test_without_interruptions_caller_words_are_answered_after_the_agent():
    engine = TurnEngine(TurnParams(allow_interruptions=False, min_silence_duration=0.3, min_endpointing_delay=0.3))
    greeting = engine.start_reply("")
    engine.reply_audio_started(greeting.turn_id)
    assert user_says(engine, 1.0, 3.0, "hello?") == []
    assert engine.tick(4.0) == []  # still speaking: no barge-in, no reply yet
    (reply,) = engine.agent_finished(greeting.turn_id, 5.0)
    assert isinstance(reply, StartReply) and reply.text == "hello?"
