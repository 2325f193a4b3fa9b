"""Opus in the realtime sink, format choice, Unmute's chat history and client-driven turns, without sockets."""

from __future__ import annotations

import base64

import numpy as np
import sphn
from test_realtime_sink import Clock, pump

from telebridge.pipeline.turns import CancelReply, Interrupt, StartReply, TurnEngine, TurnParams
from telebridge.realtime.audio_formats import InputAudio, OpusEncoder, choose_formats
from telebridge.realtime.sink import RealtimeSink
from telebridge.realtime.unmute_events import ChatEvents
from telebridge.session import SessionConfig

RATE = 24000


def test_opus_sink_sends_one_ogg_stream_in_whole_frames_and_flushes_before_audio_done():
    clock = Clock()
    events: list = []
    sink = RealtimeSink(events.append, output_format="opus", chunk_ms=40, lead_ms=300, clock=clock)
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(RATE + 500) / RATE)).astype(np.float32)  # 1.02 s
    sink.enqueue(1, tone[:700])  # a TTS piece shorter than a frame: held, not dropped
    sink.enqueue(1, tone[700:])
    sink.finish_turn(1)
    pump(sink, clock)
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.audio.done"
    raw = [base64.b64decode(e.delta) for e in events if e.type == "response.audio.delta"]
    assert raw[0][:4] == b"OggS"
    reader = sphn.OpusStreamReader(RATE)
    pcm = np.concatenate([reader.append_bytes(b) for b in raw])
    assert len(pcm) == 26 * 960  # all 24500 samples, the last partial frame padded with silence
    # Lossy but faithful: the decoded tone correlates with the original (Opus delays it a little).
    best = max(float(np.dot(pcm[d : d + 20000], tone[:20000])) for d in range(0, 400, 4))
    assert best / float(np.dot(tone[:20000], tone[:20000])) > 0.8


def test_opus_encoder_keeps_partial_frames_and_drop_forgets_them():
    enc = OpusEncoder()
    assert enc.encode(np.zeros(500, np.float32)) == b""
    assert enc.encode(np.zeros(500, np.float32))[:4] == b"OggS"  # 1000 samples: one frame out, 40 held
    enc.drop()
    assert enc.flush() == b""


def test_formats_follow_the_client_then_the_stream_then_typed_instructions():
    assert choose_formats({}, None, False) == ("pcm16", "pcm16")
    assert choose_formats({}, "opus", False) == ("opus", "opus")
    assert choose_formats({}, None, True) == ("pcm16", "opus")
    assert choose_formats({"output_audio_format": "pcm16"}, "opus", True) == ("opus", "pcm16")
    assert choose_formats({"input_audio_format": "g711_ulaw"}, None, False) == ("g711_ulaw", "pcm16")

    audio = InputAudio(16000)
    writer = sphn.OpusStreamWriter(RATE)
    first = writer.append_pcm(np.zeros(960, np.float32))
    assert audio.sniff_first(first, format_chosen=False) and audio.sniffed == "opus"
    assert not audio.sniff_first(first, format_chosen=False)  # only the first append is looked at
    audio.use("opus")
    decoded, pcm = audio.decode(first[:10])  # pages may be cut anywhere
    decoded2, pcm2 = audio.decode(first[10:] + writer.append_pcm(np.zeros(960, np.float32)))
    assert decoded + decoded2 == 1920 and abs(len(pcm) + len(pcm2) - 1280) <= 16
    plain = InputAudio(16000)
    assert not plain.sniff_first(b"\x00\x01" * 10, format_chosen=False) and plain.format == "pcm16"


def test_chat_history_is_sent_without_system_messages_and_settles_each_reply():
    events: list = []
    enabled = [True]
    obs = ChatEvents(events.append, enabled=lambda: enabled[0], voice=lambda: "v")
    obs.reply_started(1)
    obs.reply_text(1, "Hello there.", 0)
    obs.reply_done(1, "Hello there.")
    obs.user_transcript("What are")
    obs.user_transcript("your hours?")
    obs.reply_started(2)
    obs.reply_text(2, "We open at nine.", 0)
    obs.reply_interrupted(2, "We open…")
    obs.reply_started(3)
    obs.reply_dropped(3)
    outputs = [e.args["chat_history"] for e in events if e.type == "unmute.additional_outputs"]
    assert outputs[-1] == [
        {"role": "assistant", "content": "Hello there."},
        {"role": "user", "content": "What are your hours?"},
        {"role": "assistant", "content": "We open…"},
    ]
    last = [e for e in events if e.type == "unmute.additional_outputs"][-1]
    assert set(last.args) == {"chat_history", "debug_dict", "debug_plot_data"}
    enabled[0] = False  # a seed-style client: nothing extra
    before = len(events)
    obs.user_transcript("thanks")
    assert all(e.type != "unmute.additional_outputs" for e in events[before:])


def engine() -> TurnEngine:
    return TurnEngine(TurnParams.from_config(SessionConfig(initial_messages=[], silence_timeout=None)))


def test_commit_skips_the_endpointing_wait_and_response_create_replies_once():
    e = engine()
    e.speech_started(1.0)
    e.speech_ended(2.0, np.zeros(10, np.float32))
    assert e.commit(2.0) == []  # waiting for the words
    actions = e.transcript(1, "what are your hours", 2.1)
    assert [type(a) for a in actions] == [StartReply] and actions[0].text == "what are your hours"
    assert e.request_reply(2.1) == []  # a reply is already under way: nothing more
    e.reply_audio_started(actions[0].turn_id)
    e.agent_finished(actions[0].turn_id, 4.0)
    again = e.request_reply(4.1)  # nothing new from the user: the agent speaks on
    assert [type(a) for a in again] == [StartReply] and again[0].text == ""


def test_without_commit_the_endpointing_delay_still_applies():
    e = engine()
    e.speech_started(1.0)
    e.speech_ended(2.0, np.zeros(10, np.float32))
    assert e.transcript(1, "what are your hours", 2.05) == []
    assert [type(a) for a in e.tick(2.0 + e.endpoint_delay)] == [StartReply]


def test_cancel_interrupts_a_heard_reply_and_drops_a_silent_one():
    e = engine()
    reply = e.request_reply(0.0)[0]
    assert isinstance(reply, StartReply)
    assert [type(a) for a in e.cancel(0.5)] == [CancelReply]  # nothing heard yet
    reply = e.request_reply(1.0)[0]
    e.reply_audio_started(reply.turn_id)
    assert [type(a) for a in e.cancel(1.5)] == [Interrupt]
    assert e.cancel(1.6) == [] and e.reply_turn is None
