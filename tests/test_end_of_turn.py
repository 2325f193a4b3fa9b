"""The end-of-turn model (issue 10): its features and verdicts on real speech, the per-call pause logic with
synthetic time, and the process-wide classifier's batching and back-pressure."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from prometheus_client import REGISTRY
from speechutil import synth_phone_16k

from telebridge.pipeline.end_of_turn import ASK_AFTER, ASK_AGAIN_AFTER, Ask, EndOfTurn
from telebridge.pipeline.smart_turn import FRAMES, N_MELS, WINDOW, SmartTurnUnavailable, fit_window, log_mel
from telebridge.pipeline.turn_classifier import TurnClassifier

RATE = 16000


def speech(text: str) -> np.ndarray:
    x = synth_phone_16k(text).astype(np.float32)
    return x / 32768.0 if np.abs(x).max() > 2 else x


@pytest.fixture(scope="module")
def model():
    from telebridge.pipeline.smart_turn import shared_smart_turn

    try:
        return shared_smart_turn()
    except SmartTurnUnavailable as exc:
        pytest.skip(str(exc))


# --- features and the model ----------------------------------------------------------------------------------

def test_features_shape_padding_and_scale():
    x = (np.random.default_rng(1).standard_normal(RATE * 3) * 0.1).astype(np.float32)
    w = fit_window(x)
    assert w.shape == (WINDOW,) and np.all(w[: WINDOW - x.size] == 0) and np.array_equal(w[-x.size :], x)
    long = np.arange(WINDOW + 500, dtype=np.float32)
    assert np.array_equal(fit_window(long), long[-WINDOW:])
    f = log_mel(x)
    assert f.shape == (N_MELS, FRAMES) and f.dtype == np.float32
    # Whisper's scaling: at most 8 decades of range, mapped by (x + 4) / 4.
    assert f.max() - f.min() <= 2.0 + 1e-6
    # The zero padding (normalised to a constant) does not change over time; the noise is louder.
    assert f[:, :100].std(axis=1).max() < 1e-3 and f[:, -100:].mean() > f[:, :100].mean() + 0.3


def test_a_finished_question_is_complete_and_a_trailing_conjunction_is_not(model):
    tail = np.zeros(int(0.2 * RATE), np.float32)  # the closing silence the VAD has seen when it asks
    done, unfinished = model.predict([
        np.concatenate([speech("What are your opening hours?"), tail]),
        np.concatenate([speech("So I was wondering if"), tail]),
    ])
    assert done > 0.8, done
    assert unfinished < 0.3, unfinished


# --- when a call asks, and what an answer means ----------------------------------------------------------------

def _window(eot: EndOfTurn, quiet: float, voice_end: float, audio: np.ndarray, *, awaiting: bool = True,
            speaking: bool = True) -> Ask | None:
    return eot.window(speaking=speaking, quiet=quiet, voice_end=voice_end, awaiting=awaiting, snapshot=lambda: audio)


def test_one_question_per_pause_and_only_while_the_callers_turn_is_open():
    eot = EndOfTurn()
    audio = np.ones(RATE, np.float32)
    assert _window(eot, 0.0, 1.0, audio) is None  # talking
    assert _window(eot, ASK_AFTER - 0.01, 1.0, audio) is None  # not a candidate yet
    ask = _window(eot, ASK_AFTER, 1.0, audio)
    assert isinstance(ask, Ask) and ask.voice_end == 1.0 and ask.audio.size == RATE
    assert _window(eot, ASK_AFTER + 0.1, 1.0, audio) is None  # asked once per pause
    assert _window(eot, ASK_AFTER, 2.0, audio, awaiting=False) is None  # a reply is in flight / agent talking
    assert _window(eot, ASK_AFTER, 2.0, audio, speaking=False) is None
    assert eot.asked == 1


def test_the_turns_earlier_utterances_are_heard_too_up_to_eight_seconds():
    eot = EndOfTurn()
    first, second = np.full(RATE * 5, 0.1, np.float32), np.full(RATE * 2, 0.2, np.float32)
    eot.utterance_ended(first, 5.0)
    eot.utterance_ended(second, 8.0)
    ask = _window(eot, ASK_AFTER, 10.0, np.full(RATE * 2, 0.3, np.float32))
    assert ask is not None and ask.audio.size == WINDOW
    assert ask.audio[-1] == pytest.approx(0.3) and ask.audio[0] == pytest.approx(0.1)
    eot.turn_answered()
    ask = _window(eot, ASK_AFTER, 12.0, np.full(RATE, 0.4, np.float32))
    assert ask is not None and ask.audio.size == RATE  # a new turn starts empty


def test_an_answer_is_applied_only_to_the_pause_it_was_asked_about():
    eot = EndOfTurn(threshold=0.6)
    audio = np.ones(RATE, np.float32)
    ask = _window(eot, ASK_AFTER, 1.0, audio)
    v = eot.verdict(ask.voice_end, 0.9)
    assert v is not None and v.complete and v.close  # the utterance is still open: close it now
    # The caller went on talking before the answer came: the answer is stale.
    ask = _window(eot, ASK_AFTER, 2.0, audio)
    _window(eot, 0.0, 2.5, audio)
    _window(eot, 0.1, 2.5, audio)
    assert eot.verdict(ask.voice_end, 0.9) is None and eot.stale == 1
    # Incomplete, or the VAD already closed the utterance: the engine is told, nothing to close.
    ask = _window(eot, ASK_AFTER, 3.0, audio)
    eot.utterance_ended(audio, 3.0)
    v = eot.verdict(ask.voice_end, 0.2)
    assert v is not None and not v.complete and not v.close
    assert eot.verdict(3.0, None) is None  # no answer: the fixed waits


def test_an_incomplete_answer_is_asked_again_once_deeper_into_the_pause():
    eot = EndOfTurn(threshold=0.5)
    audio = np.ones(RATE, np.float32)
    first = _window(eot, ASK_AFTER, 1.0, audio)
    assert first is not None and not first.again
    assert _window(eot, ASK_AGAIN_AFTER, 1.0, audio) is None  # no answer yet: nothing to ask again about
    v = eot.verdict(1.0, 0.3, again=first.again)
    assert v is not None and not v.complete and not v.close
    assert _window(eot, ASK_AGAIN_AFTER - 0.01, 1.0, audio) is None
    second = _window(eot, ASK_AGAIN_AFTER, 1.0, audio)
    assert second is not None and second.again and second.voice_end == 1.0
    assert _window(eot, ASK_AGAIN_AFTER + 0.2, 1.0, audio) is None  # twice per pause at most
    v = eot.verdict(1.0, 0.8, again=True)
    assert v is not None and v.complete and v.close
    assert eot.verdict(1.0, 0.1) is None  # a late answer to the first question does not overrule the second
    assert eot.asked == 2
    # A complete first answer, or no answer, is not asked again.
    ask = _window(eot, ASK_AFTER, 2.0, audio)
    eot.verdict(2.0, 0.9, again=ask.again)
    assert _window(eot, ASK_AGAIN_AFTER, 2.0, audio) is None
    ask = _window(eot, ASK_AFTER, 3.0, audio)
    assert eot.verdict(3.0, None) is None
    assert _window(eot, ASK_AGAIN_AFTER, 3.0, audio) is None
    # The caller goes on after an incomplete answer: the next pause starts afresh.
    ask = _window(eot, ASK_AFTER, 4.0, audio)
    eot.verdict(4.0, 0.2)
    _window(eot, 0.0, 4.5, audio)
    assert _window(eot, ASK_AGAIN_AFTER, 4.5, audio).again is False


# --- the shared classifier --------------------------------------------------------------------------------------

class CountingModel:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[int] = []
        self.gate = gate

    def predict(self, batch):
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(len(batch))
        return [float(a[0]) for a in batch]


async def _run_blocking(fn, *args):
    return await asyncio.to_thread(fn, *args)


async def test_questions_arriving_while_the_model_is_busy_share_one_batch():
    gate = threading.Event()
    model = CountingModel(gate)
    clf = TurnClassifier(lambda: model, _run_blocking, max_batch=8)
    first = asyncio.create_task(clf.classify(np.array([0.1], np.float32)))
    await asyncio.sleep(0.05)  # the first batch is running (held by the gate)
    rest = [asyncio.create_task(clf.classify(np.array([p], np.float32))) for p in (0.2, 0.3, 0.4)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await first == pytest.approx(0.1)
    assert [await t for t in rest] == pytest.approx([0.2, 0.3, 0.4])
    assert model.batches == [1, 3] and clf.batches == 2
    await clf.aclose()


async def test_a_full_queue_or_a_failing_model_answers_none_at_once():
    gate = threading.Event()
    model = CountingModel(gate)
    clf = TurnClassifier(lambda: model, _run_blocking, max_batch=1, max_pending=2)
    held = [asyncio.create_task(clf.classify(np.array([0.5], np.float32)))]
    await asyncio.sleep(0.05)  # the model is busy with the first; two more wait
    held += [asyncio.create_task(clf.classify(np.array([0.5], np.float32))) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert await clf.classify(np.array([0.5], np.float32)) is None and clf.refused == 1
    gate.set()
    assert [await t for t in held] == [0.5, 0.5, 0.5]
    await clf.aclose()

    class Broken:
        def predict(self, batch):
            raise RuntimeError("onnx says no")

    clf = TurnClassifier(lambda: Broken(), _run_blocking)
    assert await clf.classify(np.zeros(4, np.float32)) is None
    await clf.aclose()


async def test_a_caller_that_hangs_up_while_waiting_leaves_nothing_behind():
    gate = threading.Event()
    clf = TurnClassifier(lambda: CountingModel(gate), _run_blocking)
    t = asyncio.create_task(clf.classify(np.zeros(4, np.float32)))
    t2 = asyncio.create_task(clf.classify(np.zeros(4, np.float32)))
    await asyncio.sleep(0.05)
    t2.cancel()
    gate.set()
    await t
    with pytest.raises(asyncio.CancelledError):
        await t2
    await clf.aclose()
    assert clf._task is None and not clf._queue


async def test_a_question_gone_stale_while_waiting_is_answered_none_without_the_model():
    gate = threading.Event()
    model = CountingModel(gate)
    clf = TurnClassifier(lambda: model, _run_blocking, max_batch=8)
    before = {o: REGISTRY.get_sample_value("telebridge_end_of_turn_questions_total", {"outcome": o}) or 0.0
              for o in ("answered", "skipped")}
    cpu_before = REGISTRY.get_sample_value("telebridge_end_of_turn_cpu_seconds_total") or 0.0
    resumed = False
    first = asyncio.create_task(clf.classify(np.array([0.1], np.float32)))
    await asyncio.sleep(0.05)  # the model is busy with the first question
    gone = asyncio.create_task(clf.classify(np.array([0.2], np.float32), stale=lambda: resumed))
    kept = asyncio.create_task(clf.classify(np.array([0.3], np.float32), stale=lambda: False))

    def broken() -> bool:
        raise RuntimeError("bug in the check")

    odd = asyncio.create_task(clf.classify(np.array([0.4], np.float32), stale=broken))
    await asyncio.sleep(0.01)
    resumed = True  # the caller went on talking while the question waited
    gate.set()
    assert await first == pytest.approx(0.1)
    assert await gone is None
    assert await kept == pytest.approx(0.3)
    assert await odd == pytest.approx(0.4)  # a check that fails costs nothing: the question is answered
    assert model.batches == [1, 2] and clf.skipped == 1
    after = {o: REGISTRY.get_sample_value("telebridge_end_of_turn_questions_total", {"outcome": o}) or 0.0
             for o in ("answered", "skipped")}
    # (the process-wide series: at least these; a server of another test in this process may add its own)
    assert after["answered"] - before["answered"] >= 3 and after["skipped"] - before["skipped"] >= 1
    assert (REGISTRY.get_sample_value("telebridge_end_of_turn_cpu_seconds_total") or 0.0) >= cpu_before
    await clf.aclose()


def test_an_ask_is_outdated_once_the_caller_goes_on_or_the_second_answer_is_in():
    eot = EndOfTurn(threshold=0.5)
    audio = np.ones(RATE, np.float32)
    first = _window(eot, ASK_AFTER, 1.0, audio)
    assert not eot.outdated(first)
    eot.verdict(1.0, 0.2)  # incomplete: asked again deeper into the pause
    second = _window(eot, ASK_AGAIN_AFTER, 1.0, audio)
    assert not eot.outdated(second) and not eot.outdated(first)
    eot.verdict(1.0, 0.9, again=True)
    assert eot.outdated(first) and not eot.outdated(second)  # the later answer stands
    third = _window(eot, ASK_AFTER, 2.0, audio)
    _window(eot, 0.0, 2.4, audio)  # the caller went on talking
    assert eot.outdated(third)


# --- what the turn engine does with an answer (synthetic time) ----------------------------------------------------

from telebridge.pipeline.turns import CancelReply, Settle, StartReply, TurnEngine, TurnParams  # noqa: E402


def _first_reply(engine: TurnEngine, text: str, *, verdict: bool | None, resume_at: float | None = None):
    """The caller speaks 1.0–2.0 s; the VAD closes the utterance early (at 2.2 s) when the model is sure, else at
    2.55 s; the words arrive 0.15 s later. Returns when the agent starts replying (and to what), or None."""
    engine.speech_started(1.0)
    uid = engine.current_utterance
    closed = 2.2 if verdict else 2.55
    engine.speech_ended(2.0, np.zeros(1600, np.float32))
    if verdict is not None:
        engine.turn_verdict(2.0, verdict)
    t = closed + 0.15
    for action in engine.transcript(uid, text, t):
        if isinstance(action, StartReply):
            return round(t, 2), action.text
    while t < 8.0:
        if resume_at is not None and abs(t - resume_at) < 0.005:
            engine.speech_started(t)
            return None
        for action in engine.tick(t):
            if isinstance(action, StartReply):
                return round(t, 2), action.text
        t = round(t + 0.01, 2)
    return None


PARAMS = dict(min_silence_duration=0.55, min_endpointing_delay=0.5, max_endpointing_delay=3.0)


def test_a_complete_turn_is_answered_as_soon_as_its_words_are_in():
    assert _first_reply(TurnEngine(TurnParams(**PARAMS)), "What are your hours?", verdict=True) == (
        2.35, "What are your hours?")
    # Without an answer from the model: the fixed waits (VAD silence, then the endpointing delay from voice end).
    assert _first_reply(TurnEngine(TurnParams(**PARAMS)), "What are your hours?", verdict=None) == (
        2.7, "What are your hours?")


def test_an_unfinished_turn_waits_for_the_caller_to_go_on():
    # The model hears an unfinished turn: the longest wait, so a caller back 1.2 s later is not cut off...
    assert _first_reply(TurnEngine(TurnParams(**PARAMS)), "My number is four one five", verdict=False,
                        resume_at=3.2) is None
    # ...and a caller who really stopped is answered after max_endpointing_delay.
    assert _first_reply(TurnEngine(TurnParams(**PARAMS)), "I have a question", verdict=False)[0] == 5.0
    # Words that look unfinished win over a model that heard a finished sentence.
    assert _first_reply(TurnEngine(TurnParams(**PARAMS)), "I'd like to", verdict=True)[0] == 5.0
    # ... even when Whisper made a question of them ("on the, um, fourteenth" cut after "the"): a caller back
    # 1.0 s later goes on with the same turn.
    assert _first_reply(TurnEngine(TurnParams(**PARAMS)), "Could I come in on the?", verdict=True,
                        resume_at=3.0) is None
    assert _first_reply(TurnEngine(TurnParams(**PARAMS)), "My count number is 729. 448.", verdict=True)[0] == 5.0
    # A number read to its end is answered on the model's word.
    assert _first_reply(TurnEngine(TurnParams(**PARAMS)), "My number is 415-555-1234.", verdict=True)[0] == 2.35


def test_an_answer_about_an_earlier_pause_is_ignored():
    engine = TurnEngine(TurnParams(**PARAMS))
    engine.speech_started(1.0)
    engine.speech_ended(2.0, np.zeros(1600, np.float32))
    engine.turn_verdict(1.5, True)  # about a pause the caller talked through
    assert engine._endpoint_wait(["Hello there"]) == engine.endpoint_delay
    assert engine.awaiting_turn_end


def test_a_lone_word_after_an_unfinished_start_still_waits():
    """bench/latency.py: "I'd like to, um, book …" was heard as "I'd like." then "2." (the "um"), the model said
    complete (0.69) at the second pause, and the caller was cut off before "book"."""
    engine = TurnEngine(TurnParams(**PARAMS))
    engine.speech_started(1.0)
    engine.speech_ended(2.0, np.zeros(1600, np.float32))
    engine.turn_verdict(2.0, True)
    longest = max(engine.params.max_endpointing_delay, engine.endpoint_delay)
    assert engine._endpoint_wait(["I'd like.", "2."]) == longest
    assert engine._endpoint_wait(["I'd like to book.", "Tomorrow."]) == 0.0  # a finished start: the model decides
    assert engine._endpoint_wait(["Where are you located?"]) == 0.0


def test_after_a_hesitation_the_model_must_be_sure():
    """bench/latency.py: "I'd like to, um, book …" heard as "I'd like." then "to you." (the "um"); the model said
    complete at 0.51 and the caller was cut off. After words that stopped mid-thought, 0.8 is needed."""
    engine = TurnEngine(TurnParams(**PARAMS))
    engine.speech_started(1.0)
    engine.speech_ended(2.0, np.zeros(1600, np.float32))
    longest = max(engine.params.max_endpointing_delay, engine.endpoint_delay)
    engine.turn_verdict(2.0, True, 0.51)
    assert engine._endpoint_wait(["I'd like.", "to you."]) == longest
    assert engine._endpoint_wait(["Where are you located?"]) == 0.0  # one utterance: the threshold stands
    assert engine._endpoint_wait(["Hello.", "Where are you?"]) == 0.0  # a finished start: the threshold stands
    engine.turn_verdict(2.0, True, 0.93)
    assert engine._endpoint_wait(["I'd like.", "a refund."]) == 0.0  # sure: answered at once


async def test_phone_calls_ask_at_8_khz_and_the_model_hears_16_khz():
    eot = EndOfTurn(sample_rate=8000)
    eot.utterance_ended(np.full(8000 * 7, 0.1, np.float32), 7.0)
    ask = _window(eot, ASK_AFTER, 9.0, np.full(8000 * 2, 0.2, np.float32))
    assert ask is not None and ask.rate == 8000 and ask.audio.size == 8000 * 8  # the last 8 s

    seen: list[int] = []

    class Sizes:
        def predict(self, batch):
            seen.extend(a.size for a in batch)
            return [0.5] * len(batch)

    clf = TurnClassifier(lambda: Sizes(), _run_blocking)
    assert await clf.classify(ask.audio, ask.rate) == 0.5
    assert seen == [WINDOW]
    await clf.aclose()


def test_the_pause_a_caller_barged_in_during_is_no_end_of_turn():
    """ "Sorry, | can you stop…" over the agent: the interruption comes in the pause after "Sorry," (the caller
    paused while the agent still talked). The model is not asked about that pause (it would hear a finished
    "Sorry." and the agent would answer it); once the caller speaks again, their next pause is a candidate."""
    from telebridge.pipeline.turns import Interrupt

    engine = TurnEngine(TurnParams(**PARAMS))
    turn = engine.start_reply("", say="A long greeting.", kind="greeting").turn_id
    engine.reply_audio_started(turn, 0.5)
    engine.speech_started(5.0)
    uid = engine.current_utterance
    t = 5.0
    while t < 5.4:  # "Sorry," over the agent
        t = round(t + 0.032, 3)
        engine.speech_continues(t)
        assert engine.tick(t) == []
    engine.interim(uid, "Sorry.", t)
    actions = engine.tick(5.5)  # 0.5 s after the onset, in the pause: a word, so the agent stops
    assert any(isinstance(a, Interrupt) for a in actions)
    assert not engine.awaiting_turn_end  # the pause that began over the agent's voice
    engine.speech_continues(5.7)  # "can you stop…"
    assert engine.awaiting_turn_end  # their next pause is a candidate again


def _replied_early(engine: TurnEngine) -> StartReply:
    """Speech 1.0–2.0 s, the model sure at 2.27 s, the words in at 2.3 s: the reply starts before the fixed
    endpointing delay (2.0 + 0.55 s) would have ended the turn."""
    engine.speech_started(1.0)
    uid = engine.current_utterance
    engine.speech_ended(2.0, np.zeros(1600, np.float32))
    engine.turn_verdict(2.0, True, 0.95)
    (reply,) = [a for a in engine.transcript(uid, "You have reached sales.", 2.3) if isinstance(a, StartReply)]
    return reply


def test_a_reply_to_a_turn_ended_early_acts_only_once_the_turn_is_settled():
    """Answer early, act when sure: the reply starts at once, its tools wait for Settle at the fixed delay."""
    engine = TurnEngine(TurnParams(**PARAMS))
    reply = _replied_early(engine)
    assert not reply.settled
    assert not [a for t in (2.35, 2.45, 2.54) for a in engine.tick(t) if isinstance(a, Settle)]
    assert engine.tick(2.55) == [Settle(reply.turn_id)]
    assert engine.tick(2.6) == []  # once


def test_a_caller_who_goes_on_drops_the_unsettled_reply_and_nothing_settles():
    """"You have reached sales. | For new orders, press two.": the 0.35 s between the sentences."""
    engine = TurnEngine(TurnParams(**PARAMS))
    reply = _replied_early(engine)
    actions = engine.speech_started(2.35)
    assert CancelReply(reply.turn_id) in actions
    assert not [a for t in (2.55, 3.0, 5.0) for a in engine.tick(t) if isinstance(a, Settle)]


def test_turns_ended_by_the_fixed_delay_or_the_client_are_settled_at_once():
    engine = TurnEngine(TurnParams(**PARAMS))
    engine.speech_started(1.0)
    uid = engine.current_utterance
    engine.speech_ended(2.0, np.zeros(1600, np.float32))
    assert engine.transcript(uid, "What are your hours?", 2.3) == []
    (reply,) = [a for a in engine.tick(2.55) if isinstance(a, StartReply)]
    assert reply.settled

    client = TurnEngine(TurnParams(**PARAMS))
    client.speech_started(1.0)
    uid = client.current_utterance
    client.speech_ended(1.5, np.zeros(1600, np.float32))
    client.transcript(uid, "Hi.", 1.6)
    (reply,) = [a for a in client.commit(1.6) if isinstance(a, StartReply)]
    assert reply.settled
