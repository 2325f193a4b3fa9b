"""Conversation recordings: one JSON Lines file per session, written only with the user's consent.

Each line is ``{"timestamp_wall": <unix seconds>, "event_sender": "client" | "server" | "metadata", "data": …}``.

* ``client`` lines are the client's events, with the caller's audio replaced by
  ``{"type": "unmute.input_audio_buffer.append_anonymized", "number_of_samples": N, "sample_rate": R}`` — we
  keep how much the caller said, never their voice. Phone audio (50 frames a second) is merged into one such
  line per second.
* ``server`` lines are the server's events as sent: transcripts, reply text, the agent's audio.
* ``metadata`` lines open and close the file (``telebridge.recording.started`` / ``.ended``): session id,
  transport, agent, voice, call SID for phone calls, start and end time. A file without an ``ended`` line is a
  session that was still running or crashed.

Files are opened in append mode and flushed after every line, so a crash loses at most the line being written.
Consent can change during a session: withdrawing it (``allow_recording: false``, or ``session_data
["allow_recording"] = False`` on a phone call) deletes the file at once; giving it again starts a new file.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("telebridge.recording")

ANONYMIZED_AUDIO = "unmute.input_audio_buffer.append_anonymized"
STARTED = "telebridge.recording.started"
ENDED = "telebridge.recording.ended"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def anonymize_client_event(event: Mapping[str, Any], sample_rate: int, bytes_per_sample: int) -> dict[str, Any]:
    """A client event as recorded: audio appends become sample counts; anything else is kept."""
    if event.get("type") == "input_audio_buffer.append":
        audio = event.get("audio")
        n = len(audio) if isinstance(audio, (bytes, bytearray)) else len(base64.b64decode(str(audio or "")))
        return {"type": ANONYMIZED_AUDIO, "number_of_samples": n // bytes_per_sample, "sample_rate": sample_rate}
    return dict(event)


class Recorder:
    """Where recordings go; ``enabled`` only when a directory is configured. ``index`` (a
    :class:`telebridge.state.recordings.RecordingsIndex`) hears of every recording started, ended or deleted."""

    def __init__(self, directory: Path | None, index: Any = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.index = index

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def session(self, session_id: str, **metadata: Any) -> SessionRecording | None:
        """A recording for one session, still without consent (nothing is written until :meth:`set_consent`)."""
        if self.directory is None:
            return None
        return SessionRecording(self.directory, session_id, metadata, index=self.index)


class SessionRecording:
    """One session's recording. Not thread-safe: used from the event loop only."""

    PHONE_AUDIO_LINE_SECONDS = 1.0

    def __init__(self, directory: Path, session_id: str, metadata: dict[str, Any], index: Any = None) -> None:
        self.directory = directory
        self.index = index
        self.session_id = session_id
        self.metadata = dict(metadata)
        self.path: Path | None = None
        self._file: IO[str] | None = None
        self._consent = False
        self._started = 0.0
        self._pending_samples = 0
        self._pending_rate = 0
        self.deleted: list[Path] = []
        self.lines = 0
        self._watch: Mapping[str, Any] | None = None
        self._closed = False

    # --- consent --------------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self._file is not None

    def set_consent(self, allowed: bool) -> None:
        """Start writing (allowed) or delete what was written (withdrawn)."""
        if self._closed or allowed == self._consent:
            return
        self._consent = allowed
        if allowed:
            self._open()
        else:
            self._delete()

    def watch_consent(self, data: Mapping[str, Any]) -> None:
        """Follow ``data["allow_recording"]`` (a phone call's session_data) before every line written."""
        self._watch = data
        self.set_consent(bool(data.get("allow_recording")))

    def _check_watch(self) -> None:
        if self._watch is not None:
            self.set_consent(bool(self._watch.get("allow_recording")))

    def _open(self) -> None:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._started = time.time()
        stamp = datetime.fromtimestamp(self._started, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.session_id)[:80]
        path = self.directory / f"{stamp}_{safe}.jsonl"
        n = 1
        while path.exists():
            n += 1
            path = self.directory / f"{stamp}_{safe}_{n}.jsonl"
        # Append mode, one line per write, flushed: a crash costs at most the last line.
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in _delete/close
        self.path = path
        self._write("metadata", {"type": STARTED, "session_id": self.session_id, "start_time": _iso(self._started),
                                 **self.metadata})
        log.info("recording session %s to %s", self.session_id, path.name)
        self._tell("opened")

    def _delete(self) -> None:
        self._pending_samples = 0
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.deleted.append(self.path)
            self._tell("removed")
            log.info("recording of session %s deleted: consent withdrawn", self.session_id)
            self.path = None

    # --- writing --------------------------------------------------------------------------------------------
    def _write(self, sender: str, data: Mapping[str, Any]) -> None:
        if self._file is None:
            return
        line = json.dumps({"timestamp_wall": round(time.time(), 3), "event_sender": sender, "data": data},
                          ensure_ascii=False, separators=(",", ":"))
        try:
            self._file.write(line + "\n")
            self._file.flush()
            self.lines += 1
        except OSError as exc:  # a full disk must not end the conversation
            log.error("recording %s: write failed (%s); recording stops", self.session_id, exc)
            self._file.close()
            self._file = None

    def _flush_audio(self) -> None:
        if self._pending_samples:
            self._write("client", {"type": ANONYMIZED_AUDIO, "number_of_samples": self._pending_samples,
                                   "sample_rate": self._pending_rate})
            self._pending_samples = 0

    def client(self, event: Mapping[str, Any]) -> None:
        """A client event, already anonymized (see :func:`anonymize_client_event`)."""
        self._check_watch()
        if self._file is not None:
            self._flush_audio()
            self._write("client", event)

    def client_audio(self, samples: int, sample_rate: int) -> None:
        """Caller audio on a phone call: counted, and written as one line per second."""
        self._check_watch()
        if self._file is None:
            return
        if self._pending_rate != sample_rate:
            self._flush_audio()
            self._pending_rate = sample_rate
        self._pending_samples += samples
        if self._pending_samples >= sample_rate * self.PHONE_AUDIO_LINE_SECONDS:
            self._flush_audio()

    def wants_server(self) -> bool:
        """Whether a server event would be written now (lets callers skip building expensive ones)."""
        self._check_watch()
        return self._file is not None

    def server(self, event: Mapping[str, Any]) -> None:
        self._check_watch()
        if self._file is not None:
            self._flush_audio()
            self._write("server", event)

    def update_metadata(self, **metadata: Any) -> None:
        """E.g. the voice, once known; written in the closing metadata line."""
        self.metadata.update(metadata)

    def close(self) -> None:
        if self._closed:
            return
        self._check_watch()
        if self._file is not None:
            self._flush_audio()
            end = time.time()
            self._write("metadata", {"type": ENDED, "session_id": self.session_id, "start_time": _iso(self._started),
                                     "end_time": _iso(end), "duration_seconds": round(end - self._started, 3),
                                     **self.metadata})
            self._file.close()
            self._file = None
            self._tell("closed")
        self._closed = True

    def _tell(self, what: str) -> None:
        """The recordings index hears of it; bookkeeping never breaks a recording."""
        if self.index is not None:
            try:
                getattr(self.index, what)(self)
            except Exception:
                log.exception("recordings index: %s %s failed", what, self.session_id)


# --- reading ------------------------------------------------------------------------------------------------


def read_recording(path: str | Path) -> list[dict[str, Any]]:
    """All complete lines of a recording (a torn last line, from a crash, is skipped)."""
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            raw = raw.strip()
            if not raw:
                continue
            try:
                records.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return records


_FORMAT_BYTES = {"pcm16": (24000, 2), "g711_ulaw": (8000, 1)}


def transcript_lines(records: list[dict[str, Any]]) -> list[str]:
    """A readable transcript of a recording: metadata, who said what and when, and audio totals."""
    out: list[str] = []
    if not records:
        return ["(empty recording)"]
    t0 = float(records[0].get("timestamp_wall", 0.0))
    fmt = "pcm16"
    client_seconds = 0.0
    agent_seconds = 0.0
    words: list[str] = []
    first_word_at: float | None = None
    for rec in records:
        data = rec.get("data") or {}
        kind = data.get("type", "")
        at = float(rec.get("timestamp_wall", t0)) - t0
        stamp = f"[{at:7.2f}s]"
        if rec.get("event_sender") == "metadata":
            fields = {k: v for k, v in data.items() if k != "type" and v not in (None, "", {})}
            label = "started" if kind == STARTED else "ended" if kind == ENDED else kind
            out.append(f"{stamp} -- recording {label}: " + ", ".join(f"{k}={v}" for k, v in fields.items()))
            fmt = str(data.get("audio_format", fmt))
        elif kind == ANONYMIZED_AUDIO:
            client_seconds += data.get("number_of_samples", 0) / max(1, data.get("sample_rate") or 24000)
        elif kind == "session.updated":
            session = data.get("session") or {}
            fmt = session.get("output_audio_format", fmt)
            out.append(f"{stamp} -- session: voice={session.get('voice')} allow_recording="
                       f"{session.get('allow_recording')}")
        elif kind == "conversation.item.input_audio_transcription.completed":
            out.append(f"{stamp} user: {data.get('transcript', '')}")
            words, first_word_at = [], None
        elif kind == "conversation.item.input_audio_transcription.delta":
            words.append(str(data.get("delta", "")).strip())
            first_word_at = at if first_word_at is None else first_word_at
        elif kind == "response.audio.delta":
            rate, width = _FORMAT_BYTES.get(fmt, (24000, 2))
            agent_seconds += len(base64.b64decode(data.get("delta", ""))) / width / rate
        elif kind == "response.text.done":
            text = data.get("text", "")
            if text:
                out.append(f"{stamp} agent: {text}")
        elif kind == "unmute.interrupted_by_vad":
            out.append(f"{stamp} -- the user interrupted the agent")
        elif kind == "error":
            err = data.get("error") or {}
            out.append(f"{stamp} -- error ({err.get('type')}): {err.get('message')}")
    if words:  # deltas without a completed event (an older or cut-short recording)
        out.append(f"[{first_word_at or 0:7.2f}s] user: {' '.join(words)}")
    out.append(f"caller audio: {client_seconds:.1f} s (anonymized), agent audio: {agent_seconds:.1f} s")
    return out
