"""Twilio Media Streams codec, sans-I/O.

Theory of operation
-------------------
This module never touches a socket. Like h11, it turns frames into typed events and typed values into frames;
whoever owns the WebSocket feeds it and acts on the results. That keeps the protocol rules testable without a
network and lets the same code serve the real server and the Twilio simulator used in tests.

* Server side. :class:`StreamDecoder` is fed every frame Twilio sends (``receive(frame)``) and returns either
  a typed event (:class:`ConnectedEvent`, :class:`StartEvent`, :class:`MediaEvent`, :class:`DtmfEvent`,
  :class:`MarkEvent`, :class:`StopEvent`) or a :class:`ProtocolIssue` saying why the frame was not accepted.
  It never raises on input: a phone call must not die because of one odd frame, and the caller decides what
  an issue means (log, count, hang up). The decoder also enforces the stream's lifecycle (``connected`` →
  ``start`` → media/dtmf/mark → ``stop``), the stream identity (every message must carry the ``streamSid``
  announced by ``start``) and watches ``sequenceNumber`` for gaps and reordering, which it counts in
  :attr:`StreamDecoder.stats`. The message models themselves are in :mod:`telebridge.twilio.messages`.

  Media frames arrive 50 times a second per call, so ``receive`` has a fast path for them: ``json.loads``,
  direct dict access with exact type checks, strict base64 decoding and a direct model construction
  (:func:`~telebridge.twilio.messages.fast_media`). Only when one of those checks fails does it fall back to full
  pydantic validation, whose only job then is to produce a precise issue. Both paths share one definition of a
  valid counter so they cannot disagree.

* Server → Twilio. :func:`encode_media`, :func:`encode_mark` and :func:`encode_clear` produce exactly the keys
  Twilio accepts; Twilio flags any extra or missing key (warning 31951), so no generic serializer is used.

* Twilio's side of the wire (the frames Twilio sends, a strict parser of server frames) lives with the
  simulator, in :mod:`telebridge.simulator.wire`.
"""

from __future__ import annotations

import binascii
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from pydantic import ValidationError

from .messages import (
    EVENT_ADAPTERS,
    ConnectedEvent,
    DtmfEvent,
    Event,
    MarkEvent,
    MediaEvent,
    MediaFormat,
    StartEvent,
    StartInfo,
    StopEvent,
    fast_media,
    media_fields,
    media_text,
)

__all__ = [
    "ConnectedEvent",
    "MediaFormat",
    "StartInfo",
    "StartEvent",
    "MediaEvent",
    "DtmfEvent",
    "MarkEvent",
    "StopEvent",
    "Event",
    "IssueKind",
    "ProtocolIssue",
    "DecoderStats",
    "StreamDecoder",
    "encode_media",
    "encode_mark",
    "encode_clear",
]

IssueKind: TypeAlias = Literal[
    "binary_frame",  # Twilio only sends text frames
    "invalid_json",
    "not_an_object",  # valid JSON, but not a {...}
    "unknown_event",  # "event" missing, not a string, or not one we know
    "invalid_message",  # known event with missing fields / wrong types / bad base64
    "before_start",  # anything but "connected" before "start"
    "duplicate_start",
    "unexpected_connected",  # "connected" after "connected" or after "start"
    "after_stop",  # anything after "stop"
    "wrong_stream_sid",  # streamSid differs from the one "start" announced
    "wrong_track",  # media on a track other than "inbound"
]

_MALFORMED: Final = frozenset({"binary_frame", "invalid_json", "not_an_object", "invalid_message"})
_STATE: Final = frozenset({"before_start", "duplicate_start", "unexpected_connected", "after_stop"})
_IDENTITY: Final = frozenset({"wrong_stream_sid", "wrong_track"})


@dataclass(frozen=True, slots=True)
class ProtocolIssue:
    """Why a frame was not accepted. Returned, never raised: the caller picks the policy."""

    kind: IssueKind
    detail: str
    event: str | None = None
    """The frame's ``event`` name when it could be read."""


@dataclass(slots=True)
class DecoderStats:
    """Counters for one stream; cheap to bump on the hot path, handy for logs and metrics."""

    frames: int = 0
    """Every frame passed to ``receive``."""
    events: int = 0
    """Frames accepted as events."""
    media: int = 0
    media_bytes: int = 0
    marks: int = 0
    dtmf: int = 0
    malformed: int = 0
    """binary_frame, invalid_json, not_an_object, invalid_message."""
    unknown: int = 0
    """unknown_event."""
    state_violations: int = 0
    """before_start, duplicate_start, unexpected_connected, after_stop."""
    wrong_stream: int = 0
    """wrong_stream_sid, wrong_track."""
    out_of_order: int = 0
    """Accepted events whose sequenceNumber was not above the last one seen (reordered or repeated)."""
    seq_gaps: int = 0
    """Times the sequenceNumber jumped forward by more than one."""
    seq_missing: int = 0
    """Total sequence numbers skipped over by those gaps."""
    issues: Counter[str] = field(default_factory=Counter)
    """Issues by kind."""

    def as_dict(self) -> dict[str, int | dict[str, int]]:
        return {
            "frames": self.frames,
            "events": self.events,
            "media": self.media,
            "media_bytes": self.media_bytes,
            "marks": self.marks,
            "dtmf": self.dtmf,
            "malformed": self.malformed,
            "unknown": self.unknown,
            "state_violations": self.state_violations,
            "wrong_stream": self.wrong_stream,
            "out_of_order": self.out_of_order,
            "seq_gaps": self.seq_gaps,
            "seq_missing": self.seq_missing,
            "issues": dict(self.issues),
        }


def _describe(err: ValidationError) -> str:
    """One line naming each bad field by its wire path, e.g. ``media.payload: payload is not valid base64``."""
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{_clip(loc, 80)}: {msg}")
    return _clip("; ".join(parts), 500)


class StreamDecoder:
    """Server-side decoder for one Twilio Media Stream (one per WebSocket).

    ``fast_path=False`` forces full pydantic validation for media too; tests and the benchmark use it to
    compare the two paths.
    """

    __slots__ = ("stats", "_fast", "_start", "_stream_sid", "_stopped", "_connected", "_last_seq")

    def __init__(self, *, fast_path: bool = True) -> None:
        self.stats = DecoderStats()
        self._fast = fast_path
        self._start: StartEvent | None = None
        self._stream_sid: str | None = None
        self._stopped = False
        self._connected = False
        self._last_seq: int | None = None

    # -- state ---------------------------------------------------------------------------------------------
    @property
    def stream_sid(self) -> str | None:
        return self._stream_sid

    @property
    def call_sid(self) -> str | None:
        return self._start.start.call_sid if self._start is not None else None

    @property
    def start(self) -> StartEvent | None:
        """The accepted ``start`` event (custom parameters, media format), once seen."""
        return self._start

    @property
    def started(self) -> bool:
        return self._start is not None

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def last_sequence_number(self) -> int | None:
        return self._last_seq

    # -- input ---------------------------------------------------------------------------------------------
    def receive(self, frame: str | bytes) -> Event | ProtocolIssue:
        """Decode one WebSocket frame. Never raises on any input."""
        self.stats.frames += 1
        if not isinstance(frame, str):
            return self._issue("binary_frame", f"{type(frame).__name__} frame of {_safe_len(frame)} bytes")
        try:
            msg = json.loads(frame)
        except (ValueError, RecursionError) as exc:
            return self._issue("invalid_json", f"{type(exc).__name__}: {str(exc)[:200]}")
        return self._receive_parsed(msg)

    def _receive_parsed(self, msg: object) -> Event | ProtocolIssue:
        """:meth:`receive` of a frame's parsed JSON."""
        if type(msg) is not dict:
            return self._issue("not_an_object", f"top-level JSON {type(msg).__name__}")
        name = msg.get("event")
        if name == "media" and self._fast:
            event = fast_media(msg)
            if event is not None:
                return self._accept_media(event)
        if type(name) is not str or name not in EVENT_ADAPTERS:
            return self._issue("unknown_event", f"event={_short(name)}")
        try:
            parsed = EVENT_ADAPTERS[name].validate_python(msg)
        except ValidationError as exc:
            return self._issue("invalid_message", _describe(exc), name)
        except RecursionError:  # pathologically nested values inside known fields
            return self._issue("invalid_message", "nesting too deep", name)
        if type(parsed) is MediaEvent:
            return self._accept_media(parsed)
        return self._accept(parsed)

    def receive_audio(self, frame: str | bytes) -> bytes | Event | ProtocolIssue:
        """:meth:`receive` for the media route's hot path: an accepted ``media`` frame gives just its payload
        (the μ-law bytes), with no :class:`MediaEvent` built; any other frame gives what :meth:`receive` gives.

        Same checks, issues and counters as :meth:`receive` (the checks of
        :func:`~telebridge.twilio.messages.fast_media` and of the media acceptance, in one place): a frame that
        fails any of them goes on as :meth:`receive` takes it (without parsing its JSON twice), which explains it.
        A frame in the very text Twilio sends is read without parsing its JSON
        (:func:`~telebridge.twilio.messages.media_text`); any other goes the JSON way.
        """
        sid = self._stream_sid
        if type(frame) is str and self._fast and sid is not None and not self._stopped:
            fields = media_text(frame)  # (a frame as Twilio writes it, read without parsing its JSON)
            if fields is not None and fields[1] == sid:
                self.stats.frames += 1
                self._count_media(fields[0], len(fields[2]))
                return fields[2]
            try:
                msg = json.loads(frame)
            except (ValueError, RecursionError):
                return self.receive(frame)  # (which explains it)
            fields = media_fields(msg) if type(msg) is dict and msg.get("event") == "media" else None
            if fields is not None:
                seq, stream_sid, track, _, _, data = fields
                if stream_sid == sid and track == "inbound":
                    self.stats.frames += 1
                    self._count_media(seq, len(data))
                    return data
            self.stats.frames += 1
            return self._receive_parsed(msg)  # (marks, the other events; a media frame that failed a check)
        return self.receive(frame)

    # -- acceptance ----------------------------------------------------------------------------------------
    def _accept_media(self, event: MediaEvent) -> MediaEvent | ProtocolIssue:
        if self._stream_sid is None or self._stopped:
            return self._order_issue("media")
        if event.stream_sid != self._stream_sid:
            return self._issue("wrong_stream_sid", _sid_detail(event.stream_sid, self._stream_sid), "media")
        if event.track != "inbound":
            return self._issue("wrong_track", f"media on track {_short(event.track)}", "media")
        self._count_media(event.sequence_number, len(event.payload))
        return event

    def _count_media(self, seq: int | None, size: int) -> None:
        """An accepted media frame (sequence number ``seq``, ``size`` payload bytes) in the stats."""
        if seq is not None:
            last = self._last_seq
            if last is not None and seq == last + 1:  # the usual case, without the call
                self._last_seq = seq
            else:
                self._track_seq(seq)
        st = self.stats
        st.events += 1
        st.media += 1
        st.media_bytes += size

    def _accept(self, event: Event) -> Event | ProtocolIssue:
        name = event.event
        if self._stopped:
            return self._order_issue(name)
        if isinstance(event, ConnectedEvent):
            if self._connected or self._start is not None:
                return self._issue("unexpected_connected", "connected after connected/start", name)
            self._connected = True
        elif isinstance(event, StartEvent):
            if self._start is not None:
                return self._issue("duplicate_start", f"stream {self._stream_sid} already started", name)
            if event.stream_sid != event.start.stream_sid:
                return self._issue(
                    "wrong_stream_sid", _sid_detail(event.start.stream_sid, event.stream_sid), name
                )
            self._start = event
            self._stream_sid = event.stream_sid
        else:
            if self._stream_sid is None:
                return self._order_issue(name)
            if event.stream_sid != self._stream_sid:
                return self._issue("wrong_stream_sid", _sid_detail(event.stream_sid, self._stream_sid), name)
            if isinstance(event, StopEvent):
                self._stopped = True
            elif isinstance(event, MarkEvent):
                self.stats.marks += 1
            elif isinstance(event, DtmfEvent):
                self.stats.dtmf += 1
        self._track_seq(event.sequence_number)
        self.stats.events += 1
        return event

    def _track_seq(self, seq: int | None) -> None:
        if seq is None:
            return
        last = self._last_seq
        if last is None or seq == last + 1:
            self._last_seq = seq
        elif seq <= last:
            self.stats.out_of_order += 1  # keep the high-water mark: later frames are measured against it
        else:
            self.stats.seq_gaps += 1
            self.stats.seq_missing += seq - last - 1
            self._last_seq = seq

    def _order_issue(self, name: str) -> ProtocolIssue:
        if self._stopped:
            return self._issue("after_stop", f"{name} after stop", name)
        return self._issue("before_start", f"{name} before start", name)

    def _issue(self, kind: IssueKind, detail: str, event: str | None = None) -> ProtocolIssue:
        st = self.stats
        st.issues[kind] += 1
        if kind in _MALFORMED:
            st.malformed += 1
        elif kind == "unknown_event":
            st.unknown += 1
        elif kind in _STATE:
            st.state_violations += 1
        elif kind in _IDENTITY:
            st.wrong_stream += 1
        return ProtocolIssue(kind, detail, event)


def _safe_len(frame: object) -> int | str:
    try:
        return len(frame)  # type: ignore[arg-type]
    except TypeError:
        return "?"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: object, limit: int = 60) -> str:
    """repr() clipped, so hostile frames cannot flood logs through issue details."""
    return _clip(repr(value), limit)


def _sid_detail(got: str, expected: str) -> str:
    return f"streamSid {_short(got)} != {_short(expected)}"


# ---------------------------------------------------------------------------------------------------------------
# Server → Twilio encoders (exactly Twilio's keys, nothing else)
# ---------------------------------------------------------------------------------------------------------------


def _json_str(value: str) -> str:
    """JSON string literal; skips json.dumps for the common all-alphanumeric SID."""
    if value.isascii() and value.isalnum():
        return f'"{value}"'
    return json.dumps(value, ensure_ascii=True)


def _require_text(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: valid in Python str, not in a UTF-8 JSON frame
        raise ValueError(f"{what} is not valid Unicode text") from exc


def encode_media(stream_sid: str, payload: bytes) -> str:
    """Outbound audio: raw μ-law 8 kHz mono bytes (no WAV header), base64-encoded."""
    _require_text(stream_sid, "stream_sid")
    b64 = binascii.b2a_base64(payload, newline=False).decode("ascii")
    return f'{{"event":"media","streamSid":{_json_str(stream_sid)},"media":{{"payload":"{b64}"}}}}'


def encode_mark(stream_sid: str, name: str) -> str:
    """A mark Twilio echoes back when playback reaches it (or at once on ``clear``)."""
    _require_text(stream_sid, "stream_sid")
    _require_text(name, "mark name")
    return f'{{"event":"mark","streamSid":{_json_str(stream_sid)},"mark":{{"name":{_json_str(name)}}}}}'


def encode_clear(stream_sid: str) -> str:
    """Flush Twilio's outbound buffer (barge-in). Pending marks are echoed immediately."""
    _require_text(stream_sid, "stream_sid")
    return f'{{"event":"clear","streamSid":{_json_str(stream_sid)}}}'
