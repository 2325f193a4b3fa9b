"""Recordings: JSON Lines per session, anonymized caller audio, consent and deletion, the reader.

Phone calls recorded end to end (consent from the agent, withdrawn mid-call) are in test_voices.py, which
shares their server with the cloned-voice call; realtime recordings are in test_realtime.py.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from telebridge.cli import main as cli_main
from telebridge.recording import (
    ANONYMIZED_AUDIO,
    ENDED,
    STARTED,
    Recorder,
    anonymize_client_event,
    read_recording,
    transcript_lines,
)


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_nothing_is_written_without_consent_or_without_a_directory(tmp_path):
    assert Recorder(None).session("s1") is None
    rec = Recorder(tmp_path).session("s1", transport="realtime")
    rec.server({"type": "response.text.done", "text": "hi"})
    rec.client_audio(8000, 8000)
    rec.close()
    assert list(tmp_path.iterdir()) == []


def test_lines_are_flushed_one_by_one_with_anonymized_audio_and_metadata(tmp_path):
    rec = Recorder(tmp_path).session("rt_abc", transport="realtime", agent="a1")
    rec.set_consent(True)
    assert rec.path is not None and rec.path.parent == tmp_path and rec.path.suffix == ".jsonl"
    audio = bytes(960 * 2)
    rec.client(anonymize_client_event({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()},
                                      24000, 2))
    rec.server({"type": "response.text.done", "event_id": "event_x", "text": "Hello."})
    # Flushed per line: another reader sees everything while the session is still open.
    live = lines_of(rec.path)
    assert [r["event_sender"] for r in live] == ["metadata", "client", "server"]
    assert live[0]["data"] == {"type": STARTED, "session_id": "rt_abc", "start_time": live[0]["data"]["start_time"],
                               "transport": "realtime", "agent": "a1"}
    assert live[1]["data"] == {"type": ANONYMIZED_AUDIO, "number_of_samples": 960, "sample_rate": 24000}
    assert all(set(r) == {"timestamp_wall", "event_sender", "data"} for r in live)
    rec.update_metadata(voice="voice_001")
    rec.close()
    final = lines_of(rec.path)
    assert final[-1]["event_sender"] == "metadata"
    assert final[-1]["data"]["type"] == ENDED and final[-1]["data"]["voice"] == "voice_001"
    assert final[-1]["data"]["end_time"] >= final[-1]["data"]["start_time"]


def test_phone_audio_is_counted_per_second(tmp_path):
    rec = Recorder(tmp_path).session("CA1", transport="phone")
    rec.set_consent(True)
    for _ in range(120):  # 2.4 s of 20 ms frames
        rec.client_audio(160, 8000)
    rec.server({"type": "response.text.done", "text": "ok"})
    counts = [r["data"]["number_of_samples"] for r in lines_of(rec.path) if r["data"]["type"] == ANONYMIZED_AUDIO]
    assert counts == [8000, 8000, 3200]


def test_withdrawing_consent_deletes_and_consent_again_starts_a_new_file(tmp_path):
    rec = Recorder(tmp_path).session("s2")
    rec.set_consent(True)
    rec.server({"type": "response.text.done", "text": "secret"})
    first = rec.path
    assert first is not None and first.exists()
    rec.set_consent(False)
    assert not first.exists() and rec.deleted == [first]
    rec.server({"type": "response.text.done", "text": "not recorded"})
    assert list(tmp_path.iterdir()) == []
    rec.set_consent(True)
    rec.server({"type": "response.text.done", "text": "recorded again"})
    rec.close()
    (again,) = tmp_path.iterdir()
    texts = [r["data"].get("text") for r in lines_of(again)]
    assert "recorded again" in texts and "secret" not in texts and "not recorded" not in texts


def test_consent_followed_through_session_data(tmp_path):
    data = {"allow_recording": True}
    rec = Recorder(tmp_path).session("CA2")
    rec.watch_consent(data)
    rec.server({"type": "x"})
    path = rec.path
    assert path is not None and path.exists()
    data["allow_recording"] = False  # e.g. a tool of the agent, mid-call
    rec.server({"type": "y"})
    assert not path.exists()
    rec.close()
    assert list(tmp_path.iterdir()) == []


def test_reader_skips_a_torn_last_line_and_prints_a_transcript(tmp_path, capsys):
    rec = Recorder(tmp_path).session("rt_t")
    rec.set_consent(True)
    rec.server({"type": "conversation.item.input_audio_transcription.completed", "transcript": "What time is it?"})
    rec.server({"type": "response.audio.delta", "delta": base64.b64encode(bytes(48000)).decode()})
    rec.server({"type": "response.text.done", "text": "It is noon."})
    rec.close()
    assert rec.path is not None
    with open(rec.path, "a") as f:
        f.write('{"timestamp_wall": 1, "event_sender": "serv')  # a crash mid-write
    records = read_recording(rec.path)
    assert records[-1]["data"]["type"] == ENDED
    lines = transcript_lines(records)
    assert any(line.endswith("user: What time is it?") for line in lines)
    assert any(line.endswith("agent: It is noon.") for line in lines)
    assert lines[-1] == "caller audio: 0.0 s (anonymized), agent audio: 1.0 s"
    assert cli_main(["recordings", "show", str(rec.path)]) == 0
    assert "agent: It is noon." in capsys.readouterr().out
