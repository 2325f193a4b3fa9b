"""The messages Twilio sends on a Media Stream, as typed models, and the fast path that builds media events.

The wire's camelCase names are the models' validation aliases; counters (``sequenceNumber``, ``chunk``,
``timestamp``) arrive as decimal strings and become ints; ``payload`` arrives as base64 and becomes the μ-law
bytes. :func:`fast_media` builds a :class:`MediaEvent` from an already parsed dict without pydantic, with checks
that mirror the validators exactly (both use :func:`_parse_counter`), so a ``None`` from it only means "let
pydantic explain". :func:`media_text` goes one step further for the frames of a running call: it reads a media
frame in the exact text Twilio sends, without parsing its JSON at all. :class:`~telebridge.twilio.stream.StreamDecoder`
uses all three.
"""

from __future__ import annotations

import binascii
import re
from typing import Annotated, Any, Final, Literal, TypeAlias

from pydantic import AliasPath, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

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
    "EVENT_ADAPTERS",
    "FAST_CONSTRUCT",
    "fast_media",
    "media_text",
]

# Longest counter we accept. Twilio's counters are small; the bound keeps int() cheap and away from
# CPython's int-from-str digit limit, which would raise on hostile input.
_MAX_COUNTER_DIGITS: Final = 18


# ---------------------------------------------------------------------------------------------------------------
# Shared value parsing (used by both the fast path and the pydantic models, so they agree)
# ---------------------------------------------------------------------------------------------------------------


def _parse_counter(value: object) -> int | None:
    """Return the counter as a non-negative int, or None if it is not one.

    Twilio sends counters as decimal strings ("4"). We also take a plain JSON integer. Booleans, floats,
    signs, whitespace and non-ASCII digits are refused: pydantic's lax int would take ``True`` or ``"4.0"``.
    """
    tp = type(value)
    if tp is str:
        s: str = value  # type: ignore[assignment]
        if 0 < len(s) <= _MAX_COUNTER_DIGITS and s.isascii() and s.isdigit():
            return int(s)
        return None
    if tp is int and 0 <= value < 10**_MAX_COUNTER_DIGITS:  # type: ignore[operator]
        return value  # type: ignore[return-value]
    return None


def _counter_validator(value: object) -> int:
    parsed = _parse_counter(value)
    if parsed is None:
        raise ValueError("expected a non-negative decimal counter (string of ASCII digits or integer)")
    return parsed


def _b64decode(value: str) -> bytes | None:
    """Strict base64 (standard alphabet, correct padding); None if invalid."""
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except ValueError:  # binascii.Error subclasses ValueError; non-ASCII str raises ValueError
        return None


def _payload_validator(value: object) -> object:
    if isinstance(value, (bytes, bytearray)):
        # Constructing by field name with bytes that are already decoded.
        return bytes(value)
    if not isinstance(value, str):
        raise ValueError("payload must be a base64 string")
    decoded = _b64decode(value)
    if decoded is None:
        raise ValueError("payload is not valid base64")
    return decoded


TwilioCounter: TypeAlias = Annotated[int, BeforeValidator(_counter_validator)]
"""A Twilio counter: JSON string of digits (or integer) coerced to int."""

Payload: TypeAlias = Annotated[bytes, BeforeValidator(_payload_validator)]
"""Audio bytes, base64-decoded from the wire."""


# ---------------------------------------------------------------------------------------------------------------
# Messages Twilio sends (server side)
# ---------------------------------------------------------------------------------------------------------------


class _TwilioMessage(BaseModel):
    """Base for messages from Twilio.

    Unknown keys are ignored rather than rejected: Twilio may add fields, and a live call should not fail on
    that. Field names follow Python; the wire's camelCase names are the validation aliases.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    sequence_number: TwilioCounter | None = Field(default=None, validation_alias="sequenceNumber")


class ConnectedEvent(_TwilioMessage):
    """First message on the socket; carries no stream identity yet."""

    event: Literal["connected"] = "connected"
    protocol: str
    version: str
    stream_sid: str | None = Field(default=None, validation_alias="streamSid")


class MediaFormat(BaseModel):
    """Audio format announced in ``start``; Twilio always uses μ-law/8000/mono for bidirectional streams."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    encoding: str = "audio/x-mulaw"
    sample_rate: int = Field(default=8000, validation_alias="sampleRate", strict=True)
    channels: int = Field(default=1, strict=True)


class StartInfo(BaseModel):
    """The ``start`` object: who is calling and what the TwiML passed along as ``<Parameter>``s."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    account_sid: str = Field(validation_alias="accountSid")
    stream_sid: str = Field(validation_alias="streamSid")
    call_sid: str = Field(validation_alias="callSid")
    tracks: list[str] = Field(default_factory=lambda: ["inbound"])
    # Twilio's documentation shows mediaFormat always present; if it were omitted the only format a
    # bidirectional stream supports is the default, so a missing object is not worth failing a call over.
    media_format: MediaFormat = Field(default_factory=MediaFormat, validation_alias="mediaFormat")
    custom_parameters: dict[str, str] = Field(default_factory=dict, validation_alias="customParameters")


class StartEvent(_TwilioMessage):
    """Stream metadata; sent once, before any media."""

    event: Literal["start"] = "start"
    stream_sid: str = Field(validation_alias="streamSid")
    start: StartInfo

    @property
    def call_sid(self) -> str:
        return self.start.call_sid

    @property
    def account_sid(self) -> str:
        return self.start.account_sid

    @property
    def custom_parameters(self) -> dict[str, str]:
        return self.start.custom_parameters


class MediaEvent(_TwilioMessage):
    """20 ms of caller audio (raw μ-law bytes, already base64-decoded)."""

    event: Literal["media"] = "media"
    stream_sid: str = Field(validation_alias="streamSid")
    track: str = Field(validation_alias=AliasPath("media", "track"))
    chunk: TwilioCounter = Field(validation_alias=AliasPath("media", "chunk"))
    timestamp: TwilioCounter = Field(validation_alias=AliasPath("media", "timestamp"))
    """Milliseconds since the stream started."""
    payload: Payload = Field(validation_alias=AliasPath("media", "payload"), repr=False)


class DtmfEvent(_TwilioMessage):
    """A key the caller pressed."""

    event: Literal["dtmf"] = "dtmf"
    stream_sid: str = Field(validation_alias="streamSid")
    digit: str = Field(validation_alias=AliasPath("dtmf", "digit"), min_length=1, max_length=1)
    track: str = Field(validation_alias=AliasPath("dtmf", "track"))


class MarkEvent(_TwilioMessage):
    """Echo of a mark the server sent: playback reached it, or a ``clear`` flushed it."""

    event: Literal["mark"] = "mark"
    stream_sid: str = Field(validation_alias="streamSid")
    name: str = Field(validation_alias=AliasPath("mark", "name"))


class StopEvent(_TwilioMessage):
    """The stream ended (caller hung up, call was redirected, or the server closed it)."""

    event: Literal["stop"] = "stop"
    stream_sid: str = Field(validation_alias="streamSid")
    account_sid: str = Field(validation_alias=AliasPath("stop", "accountSid"))
    call_sid: str = Field(validation_alias=AliasPath("stop", "callSid"))


Event: TypeAlias = ConnectedEvent | StartEvent | MediaEvent | DtmfEvent | MarkEvent | StopEvent

_EVENT_MODELS: Final[dict[str, type[_TwilioMessage]]] = {
    "connected": ConnectedEvent,
    "start": StartEvent,
    "media": MediaEvent,
    "dtmf": DtmfEvent,
    "mark": MarkEvent,
    "stop": StopEvent,
}
EVENT_ADAPTERS: Final[dict[str, TypeAdapter[Any]]] = {k: TypeAdapter(m) for k, m in _EVENT_MODELS.items()}


# ---------------------------------------------------------------------------------------------------------------
# Media frames without pydantic validation (50 a second per call)
# ---------------------------------------------------------------------------------------------------------------

_MEDIA_FIELDS_SET: Final = frozenset(
    {"event", "sequence_number", "stream_sid", "track", "chunk", "timestamp", "payload"}
)
_new = object.__new__
_set = object.__setattr__


def _construct_media_raw(
    seq: int | None, sid: str, track: str, chunk: int, ts: int, payload: bytes
) -> MediaEvent:
    """Build a MediaEvent from values already checked, at ~0.6 µs.

    Why not ``model_construct``: in pydantic 2.x it runs Python-level default and alias handling and costs
    ~4.7 µs for this model, more than full validation. This writes the same four slots model_construct writes
    (``__dict__`` in field order, fields-set, extra, private). :func:`_fast_construct_works` checks at import
    time that the result equals a validated model, so a pydantic change falls back to ``model_construct``.
    """
    obj = _new(MediaEvent)
    _set(
        obj,
        "__dict__",
        {
            "sequence_number": seq,
            "event": "media",
            "stream_sid": sid,
            "track": track,
            "chunk": chunk,
            "timestamp": ts,
            "payload": payload,
        },
    )
    _set(obj, "__pydantic_fields_set__", set(_MEDIA_FIELDS_SET))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


def _construct_media_safe(
    seq: int | None, sid: str, track: str, chunk: int, ts: int, payload: bytes
) -> MediaEvent:
    return MediaEvent.model_construct(
        set(_MEDIA_FIELDS_SET),
        sequence_number=seq,
        stream_sid=sid,
        track=track,
        chunk=chunk,
        timestamp=ts,
        payload=payload,
    )


def _fast_construct_works() -> bool:
    sample = {
        "event": "media",
        "sequenceNumber": "7",
        "streamSid": "MZ0",
        "media": {"track": "inbound", "chunk": "3", "timestamp": "40", "payload": "/w=="},
    }
    try:
        ref = MediaEvent.model_validate(sample)
        got = _construct_media_raw(7, "MZ0", "inbound", 3, 40, b"\xff")
        return (
            got == ref
            and got.__dict__ == ref.__dict__
            and list(got.__dict__) == list(ref.__dict__)
            and got.model_fields_set == ref.model_fields_set
            and got.model_dump() == ref.model_dump()
            and hash(got) == hash(ref)
        )
    except Exception:  # any incompatibility means: use the supported, slower constructor
        return False


FAST_CONSTRUCT: Final = _fast_construct_works()
_construct_media = _construct_media_raw if FAST_CONSTRUCT else _construct_media_safe


def media_fields(msg: dict[str, Any]) -> tuple[int | None, str, str, int, int, bytes] | None:
    """``(sequence number, stream sid, track, chunk, timestamp, payload bytes)`` of a well-formed media dict, checked
    without pydantic; None if any check fails.

    Every check here mirrors the model's validators exactly, so a None only means "let pydantic explain".
    """
    media = msg.get("media")
    sid = msg.get("streamSid")
    if type(media) is not dict or type(sid) is not str:
        return None
    track = media.get("track")
    payload = media.get("payload")
    if type(track) is not str or type(payload) is not str:
        return None
    raw_seq = msg.get("sequenceNumber")
    seq = None if raw_seq is None else _parse_counter(raw_seq)
    chunk = _parse_counter(media.get("chunk"))
    ts = _parse_counter(media.get("timestamp"))
    if chunk is None or ts is None or (seq is None and raw_seq is not None):
        return None
    try:
        data = binascii.a2b_base64(payload, strict_mode=True)
    except ValueError:
        return None
    return seq, sid, track, chunk, ts, data


def fast_media(msg: dict[str, Any]) -> MediaEvent | None:
    """Build a MediaEvent from a well-formed dict without pydantic validation (:func:`media_fields`); None if any
    check fails."""
    fields = media_fields(msg)
    return None if fields is None else _construct_media(*fields)


# A media frame exactly as Twilio writes it: compact JSON with its keys in Twilio's order, the counters in ASCII
# digits (at most _MAX_COUNTER_DIGITS, as _parse_counter takes them), a payload in the base64 alphabet and a stream
# SID of letters and digits. Such a text is valid JSON whose values need no unescaping, and media_fields would find
# in it just what the groups hold; any other text (spaces, another key order, an escape, an extra key) is not
# matched and goes the JSON way.
_COUNTER = f"[0-9]{{1,{_MAX_COUNTER_DIGITS}}}"
_MEDIA_TEXT: Final = re.compile(
    rf'\{{"event":"media","sequenceNumber":"({_COUNTER})","media":\{{"track":"inbound","chunk":"{_COUNTER}",'
    rf'"timestamp":"{_COUNTER}","payload":"([A-Za-z0-9+/]*={{0,2}})"\}},"streamSid":"([A-Za-z0-9]+)"\}}'
).fullmatch


def media_text(frame: str) -> tuple[int, str, bytes] | None:
    """``(sequence number, stream sid, payload bytes)`` of an inbound-track media frame in the text Twilio sends
    (compact, in its key order), read without parsing the JSON (less than half the cost of ``json.loads`` and
    :func:`media_fields`: ``bench/bench_codec.py``); None for any other text, which then goes the JSON way (it may
    still be a valid frame).

    What it returns is what :func:`media_fields` returns for the same frame, chunk and timestamp checked but not
    kept (nothing uses them)."""
    m = _MEDIA_TEXT(frame)
    if m is None:
        return None
    seq, payload, sid = m.groups()
    try:
        data = binascii.a2b_base64(payload, strict_mode=True)
    except ValueError:  # (the alphabet is right, the padding or length is not)
        return None
    return int(seq), sid, data
