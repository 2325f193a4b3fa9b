"""The realtime sink and the event translation, driven by hand with an explicit clock (no sockets, no sleeps)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from telebridge.realtime.observer import ConversationEvents
from telebridge.realtime.protocol import SessionConfig, parse_client_event
from telebridge.realtime.sink import RealtimeSink

RATE = 24000
CHUNK = 960  # 40 ms


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def rig():
    clock = Clock()
    events: list = []
    sink = RealtimeSink(events.append, chunk_ms=40, lead_ms=300, clock=clock)
    played: list[int] = []
    audible: list[int] = []
    sink.on_turn_played = played.append
    sink.on_turn_audible = audible.append
    return sink, clock, events, played, audible


def kinds(events) -> list[str]:
    return [e.type for e in events]


def pump(sink: RealtimeSink, clock: Clock, until: float | None = None) -> None:
    """What the send loop does: send whenever the pacer allows, advancing the clock to each send time."""
    while sink._queue:
        clock.t += sink.pacer.wait_time(clock.t)
        if until is not None and clock.t > until:
            return
        sink.send_chunk(clock.t)
    if until is not None:
        clock.t = max(clock.t, until)


async def test_audio_is_paced_with_a_lead_and_heard_follows_the_clock(rig):
    sink, clock, events, played, audible = rig
    start = clock.t
    assert sink.enqueue(1, np.full(RATE, 0.25, dtype=np.float32)) == RATE  # 1 s
    sink.send_chunk(clock.t)
    assert audible == [1]
    pump(sink, clock)
    deltas = [e for e in events if e.type == "response.audio.delta"]
    assert len(deltas) == RATE // CHUNK
    pcm = np.frombuffer(b"".join(base64.b64decode(e.delta) for e in deltas), dtype="<i2")
    assert len(pcm) == RATE and np.all(pcm == 8192)
    # The last chunk went out 0.3 s before the end of playback.
    assert clock.t == pytest.approx(start + 1.0 - 0.3 - 0.04 + 0.0, abs=0.045)
    clock.t = start + 0.5
    assert sink.heard(1) == pytest.approx(RATE // 2, abs=2)
    assert sink.finish_turn(1) is False  # sent, not yet played
    assert kinds(events)[-1] == "response.audio.done"
    clock.t = start + 1.01
    assert sink._check_played(clock.t) is None
    assert played == [1]
    assert sink.heard(1) == RATE


async def test_text_is_released_with_the_audio_it_starts_in(rig):
    sink, clock, events, *_ = rig
    sink.begin_reply(3)
    # The loop may report the sentence before its audio (new order) or after it (old order): both align.
    sink.add_text(3, 0, "one two three four")
    assert not [e for e in events if e.type == "response.text.delta"], "nothing before its audio is enqueued"
    sink.enqueue(3, np.zeros(RATE, dtype=np.float32))
    sink.enqueue(3, np.zeros(RATE, dtype=np.float32))
    sink.add_text(3, RATE, "five six")
    order: list[str] = []
    while sink._queue:
        before = len(events)
        sink.send_chunk(clock.t)
        clock.t += 0.04
        order += [e.delta.strip() if e.type == "response.text.delta" else "~" for e in events[before:]]
    words = [w for w in order if w != "~"]
    assert words == ["one", "two", "three", "four", "five", "six"]
    # Words sit at their character share of the sentence: "three" starts ~0.4 s in, "five" at 1 s.
    position = {w: order[: order.index(w)].count("~") for w in words}
    assert position["one"] == 0
    assert 8 <= position["three"] <= 12
    assert position["five"] == 25
    texts = [e.delta for e in events if e.type == "response.text.delta"]
    assert "".join(texts) == "one two three four five six"


async def test_clear_freezes_what_was_heard_and_resume_continues_the_reply(rig):
    sink, clock, events, played, _ = rig
    sink.begin_reply(5)
    sink.enqueue(5, np.zeros(2 * RATE, dtype=np.float32))
    sink.add_text(5, 0, "alpha beta gamma delta")
    start = clock.t
    pump(sink, clock, until=start + 0.5)
    await sink.clear()
    heard = sink.heard(5)
    assert 0.15 * RATE < heard < 0.55 * RATE
    clock.t += 5
    assert sink.heard(5) == heard, "frozen at the clear"
    assert not sink._queue
    released = [e.delta.strip() for e in events if e.type == "response.text.delta"]
    assert released and len(released) < 4
    # The loop resumes the reply as a new segment from where it was heard; the rest of the words follow.
    sink.resume_reply(5, heard)
    sink.enqueue(6, np.zeros(2 * RATE - heard, dtype=np.float32))
    assert sink.finish_turn(6) is False
    pump(sink, clock)
    released = [e.delta.strip() for e in events if e.type == "response.text.delta"]
    assert released == ["alpha", "beta", "gamma", "delta"]
    assert kinds(events).count("response.audio.done") == 1
    clock.t += 2
    sink._check_played(clock.t)
    assert played == [6]


async def test_drop_turn_forgets_unsent_audio_and_output_format_switches_to_ulaw(rig):
    sink, clock, events, *_ = rig
    sink.enqueue(7, np.zeros(RATE, dtype=np.float32))
    sink.send_chunk(clock.t)
    sink.drop_turn(7)
    assert not sink._queue
    sink.set_output_format("g711_ulaw")
    sink.enqueue(8, np.zeros(RATE // 2, dtype=np.float32))
    pump(sink, clock)
    ulaw = b"".join(base64.b64decode(e.delta) for e in events[1:] if e.type == "response.audio.delta")
    assert abs(len(ulaw) - 4000) <= 40 and set(ulaw) <= {0xFF, 0x7F}  # 0.5 s of μ-law silence at 8 kHz


async def test_empty_reply_is_done_at_once(rig):
    sink, clock, events, *_ = rig
    sink.begin_reply(9)
    assert sink.finish_turn(9) is True
    assert kinds(events) == ["response.audio.done"]


def test_observer_translates_the_loop_hooks():
    events: list = []
    history = [{"role": "user", "content": "hi"}]
    obs = ConversationEvents(events.append, history=lambda: history, voice=lambda: "v1")
    obs.user_speech_started(1.25)
    obs.user_speech_stopped(2.0)
    obs.user_transcript("hello there")
    obs.reply_started(1)
    obs.reply_text(1, "Hi you.", 0)
    obs.reply_done(1, "Hi you.")
    obs.reply_started(2)
    obs.reply_interrupted(2, "Well…")
    obs.reply_done(2, "ignored: already closed")
    got = [(e.type, {k: v for k, v in e.model_dump().items() if k not in ("type", "event_id")}) for e in events]
    assert got == [
        ("input_audio_buffer.speech_started", {"audio_start_ms": 1250}),
        ("input_audio_buffer.speech_stopped", {"audio_end_ms": 2000}),
        ("conversation.item.input_audio_transcription.delta", {"delta": "hello", "start_time": 1.25}),
        ("conversation.item.input_audio_transcription.delta", {"delta": " there", "start_time": 1.25}),
        ("conversation.item.input_audio_transcription.completed", {"transcript": "hello there"}),
        ("response.created", {"response": {"object": "realtime.response", "status": "in_progress", "voice": "v1",
                                            "chat_history": history}}),
        ("unmute.response.text.delta.ready", {"delta": " Hi"}),
        ("unmute.response.text.delta.ready", {"delta": " you."}),
        ("response.text.delta", {"delta": " Hi"}),
        ("response.text.delta", {"delta": " you."}),
        ("response.text.done", {"text": "Hi you."}),
        ("response.created", {"response": {"object": "realtime.response", "status": "in_progress", "voice": "v1",
                                            "chat_history": history}}),
        ("unmute.interrupted_by_vad", {}),
        ("response.text.done", {"text": "Well…"}),
    ]
    assert len({e.event_id for e in events}) == len(events)


def test_session_config_merges_and_echoes_like_the_seed():
    first = parse_client_event('{"type": "session.update", "session": {"voice": "a", "allow_recording": true}}')
    assert isinstance(first.session, SessionConfig)
    assert first.session.echo() == {"instructions": None, "voice": "a", "allow_recording": True}
    openai = parse_client_event('{"type": "session.update", "session": {"modalities": ["audio"], '
                                '"turn_detection": null, "input_audio_format": "g711_ulaw"}}')
    assert openai.session.echo() == {"instructions": None, "voice": None, "allow_recording": False,
                                     "input_audio_format": "g711_ulaw"}
