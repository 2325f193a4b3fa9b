"""Past calls from their recordings (:mod:`telebridge.recording`): the list, and one call's transcript and timeline.

The hub forgets calls past its history (and everything at a restart); recordings, where the agent or the client
consented, stay on disk. Listing reads only each file's first and last lines (a recording holds the agent's
audio, so it can be megabytes); opening one reads it whole. Both are blocking file I/O: call them from a worker
thread (the routes do). Nothing here writes or deletes.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from ..logs import scrub
from ..recording import ENDED, STARTED, read_recording

__all__ = ["list_recordings", "find_recording", "recording_detail"]

MAX_LISTED = 100
_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def _safe(session_id: str) -> str:
    """A session id as :class:`~telebridge.recording.SessionRecording` puts it in the file name."""
    return _SAFE.sub("_", session_id)[:80]


def _first_and_last(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    with open(path, "rb") as f:
        first_raw = f.readline()
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 65536))
        tail = f.read().splitlines()
    first = _json(first_raw)
    last = next((rec for rec in map(_json, reversed(tail)) if rec is not None), None)
    return first, last


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _when(iso: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return None


def _summary(path: Path) -> dict[str, Any] | None:
    try:
        first, last = _first_and_last(path)
    except OSError:
        return None
    meta = (first or {}).get("data") or {}
    if meta.get("type") != STARTED:
        return None
    end = (last or {}).get("data") or {}
    ended = end.get("type") == ENDED
    started = _when(meta.get("start_time")) or float((first or {}).get("timestamp_wall") or 0.0)
    duration = end.get("duration_seconds") if ended else None
    if duration is None and last is not None:
        duration = max(0.0, float(last.get("timestamp_wall") or started) - started)
    transport = str(meta.get("transport") or "phone")
    return {
        "id": str(meta.get("session_id") or path.stem), "transport": transport, "direction": "inbound",
        "number": "", "agent": str(meta.get("agent") or ""), "started": round(started, 3),
        "duration": None if duration is None else round(float(duration), 1),
        "outcome": "recorded" if ended else "recording cut short", "turns": None, "live": False,
        "state": "ended", "source": "recording", "file": path.name,
    }


def list_recordings(directory: Path | None, limit: int = MAX_LISTED) -> list[dict[str, Any]]:
    """The newest ``limit`` recordings' summaries, newest first (file names start with the UTC start time)."""
    if directory is None or not Path(directory).is_dir():
        return []
    paths = sorted(Path(directory).glob("*.jsonl"), key=lambda p: p.name, reverse=True)[:limit]
    return [s for s in map(_summary, paths) if s is not None]


def find_recording(directory: Path | None, session_id: str) -> Path | None:
    """The newest recording of ``session_id`` (a CallSid or a realtime session id), if any."""
    if directory is None or not session_id or not Path(directory).is_dir():
        return None
    safe = _safe(session_id)
    paths = [p for p in Path(directory).glob(f"*_{safe}*.jsonl")
             if re.fullmatch(rf"\d{{8}}T\d{{6}}Z_{re.escape(safe)}(?:_\d+)?\.jsonl", p.name)]
    return max(paths, key=lambda p: p.name) if paths else None


def recording_detail(path: Path) -> dict[str, Any] | None:
    """One recording as the console shows a call: its summary, transcript entries and timeline."""
    summary = _summary(path)
    if summary is None:
        return None
    records = read_recording(path)
    t0 = summary["started"]
    transcript: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []
    agent_audio = False

    def at(rec: dict[str, Any]) -> float:
        return round(max(0.0, float(rec.get("timestamp_wall") or t0) - t0), 3)

    def entry(t: float, who: str, text: str, **extra: Any) -> None:
        transcript.append({"id": len(transcript) + 1, "t": t, "who": who, "text": scrub(text), **extra})

    for rec in records:
        data = rec.get("data") or {}
        kind = data.get("type", "")
        t = at(rec)
        if rec.get("event_sender") == "client":
            continue
        if kind == "input_audio_buffer.speech_started":
            timeline.append({"t": t, "kind": "caller_start", "detail": ""})
        elif kind == "input_audio_buffer.speech_stopped":
            timeline.append({"t": t, "kind": "caller_stop", "detail": ""})
        elif kind == "conversation.item.input_audio_transcription.completed":
            entry(t, "caller", str(data.get("transcript", "")))
        elif kind == "response.created":
            timeline.append({"t": t, "kind": "reply_start", "detail": ""})
            agent_audio = False
        elif kind == "response.audio.delta" and not agent_audio:
            agent_audio = True
            timeline.append({"t": t, "kind": "agent_start", "detail": ""})
        elif kind == "response.text.done":
            if data.get("text"):
                entry(t, "agent", str(data["text"]), state="done")
            timeline.append({"t": t, "kind": "agent_stop", "detail": ""})
        elif kind == "unmute.interrupted_by_vad":
            entry(t, "event", "the caller barged in", kind="barge_in")
            timeline.append({"t": t, "kind": "barge_in", "detail": ""})
        elif kind == "error":
            err = data.get("error") or {}
            entry(t, "event", f"error: {err.get('message', '')}", kind="error")
    return {**summary, "transcript": transcript, "latency": [], "timeline": timeline}
