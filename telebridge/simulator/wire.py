"""Twilio's side of the Media Streams wire: the frames Twilio sends, and a strict parser of what a server sends.

The server's codec (:mod:`telebridge.twilio.stream`) decodes Twilio's frames and encodes the server's; this is
the mirror image, for the simulator and tests: ``twilio_*`` build the frames Twilio would send, and
:func:`decode_server_message` parses server frames as strictly as Twilio does, raising
:class:`TwilioProtocolError` with Twilio's error code (31950 binary frame, 31951 bad message).
"""

from __future__ import annotations

import binascii
import json
from typing import Any, Final, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "twilio_connected",
    "twilio_start",
    "twilio_media",
    "twilio_mark",
    "twilio_dtmf",
    "twilio_stop",
    "ServerMedia",
    "ServerMark",
    "ServerClear",
    "ServerMessage",
    "TwilioProtocolError",
    "decode_server_message",
]


def _b64decode(value: str) -> bytes | None:
    """Strict base64 (standard alphabet, correct padding); None if invalid."""
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except ValueError:
        return None


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_str(value: str) -> str:
    if value.isascii() and value.isalnum():
        return f'"{value}"'
    return json.dumps(value, ensure_ascii=True)


# ---------------------------------------------------------------------------------------------------------------
# Twilio side: frames Twilio sends, and a strict parser of what the server sends (for the test simulator)
# ---------------------------------------------------------------------------------------------------------------

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _seq(sequence_number: int) -> str:
    return str(int(sequence_number))


def twilio_connected() -> str:
    return _compact({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def twilio_start(
    stream_sid: str,
    call_sid: str,
    account_sid: str,
    custom_parameters: dict[str, str],
    sequence_number: int = 1,
) -> str:
    return _compact(
        {
            "event": "start",
            "sequenceNumber": _seq(sequence_number),
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": dict(custom_parameters),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": stream_sid,
        }
    )


def twilio_media(stream_sid: str, payload: bytes, chunk: int, timestamp_ms: int, sequence_number: int) -> str:
    b64 = binascii.b2a_base64(payload, newline=False).decode("ascii")
    return (
        f'{{"event":"media","sequenceNumber":"{_seq(sequence_number)}","media":{{"track":"inbound",'
        f'"chunk":"{int(chunk)}","timestamp":"{int(timestamp_ms)}","payload":"{b64}"}},'
        f'"streamSid":{_json_str(stream_sid)}}}'
    )


def twilio_mark(stream_sid: str, name: str, sequence_number: int) -> str:
    return _compact(
        {"event": "mark", "sequenceNumber": _seq(sequence_number), "streamSid": stream_sid, "mark": {"name": name}}
    )


def twilio_dtmf(stream_sid: str, digit: str, sequence_number: int) -> str:
    return _compact(
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": _seq(sequence_number),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def twilio_stop(stream_sid: str, call_sid: str, account_sid: str, sequence_number: int) -> str:
    return _compact(
        {
            "event": "stop",
            "sequenceNumber": _seq(sequence_number),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    )


class TwilioProtocolError(Exception):
    """What Twilio would report for a bad server frame: 31950 (binary frame) or 31951 (bad message)."""

    def __init__(self, code: Literal[31950, 31951], message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _ServerMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    stream_sid: str


class ServerMedia(_ServerMessage):
    event: Literal["media"] = "media"
    payload: bytes = Field(repr=False)


class ServerMark(_ServerMessage):
    event: Literal["mark"] = "mark"
    name: str


class ServerClear(_ServerMessage):
    event: Literal["clear"] = "clear"


ServerMessage: TypeAlias = ServerMedia | ServerMark | ServerClear

_SERVER_KEYS: Final[dict[str, frozenset[str]]] = {
    "media": frozenset({"event", "streamSid", "media"}),
    "mark": frozenset({"event", "streamSid", "mark"}),
    "clear": frozenset({"event", "streamSid"}),
}


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise TwilioProtocolError(31951, f"duplicate key {key!r}")
        out[key] = value
    return out


def _exact_keys(obj: dict[str, Any], expected: frozenset[str], where: str) -> None:
    keys = set(obj)
    if keys != expected:
        missing = sorted(expected - keys)
        extra = sorted(keys - expected)
        raise TwilioProtocolError(31951, f"{where}: missing keys {missing}, extra keys {extra}")


def _nonempty_str(value: object, where: str) -> str:
    if type(value) is not str or not value:
        raise TwilioProtocolError(31951, f"{where} must be a non-empty string")
    return value


def decode_server_message(frame: str | bytes, *, expected_stream_sid: str | None = None) -> ServerMessage:
    """Parse a server → Twilio frame as strictly as Twilio does.

    Raises TwilioProtocolError: 31950 for a binary frame; 31951 for invalid JSON, a non-object, an unknown
    event, a missing or extra key at any level, duplicate keys, a wrong type, invalid base64, or (when
    ``expected_stream_sid`` is given) a wrong streamSid.
    """
    if not isinstance(frame, str):
        raise TwilioProtocolError(31950, "binary WebSocket frames are not supported")
    try:
        msg = json.loads(frame, object_pairs_hook=_no_duplicate_keys)
    except TwilioProtocolError:
        raise
    except (ValueError, RecursionError) as exc:
        raise TwilioProtocolError(31951, f"invalid JSON: {exc}") from None
    if type(msg) is not dict:
        raise TwilioProtocolError(31951, "message is not a JSON object")
    event = msg.get("event")
    if type(event) is not str or event not in _SERVER_KEYS:
        raise TwilioProtocolError(31951, f"unknown event {_short(event)}")
    _exact_keys(msg, _SERVER_KEYS[event], "message")
    sid = _nonempty_str(msg["streamSid"], "streamSid")
    if expected_stream_sid is not None and sid != expected_stream_sid:
        raise TwilioProtocolError(31951, f"wrong streamSid {_short(sid)}")
    if event == "clear":
        return ServerClear(stream_sid=sid)
    body = msg[event]
    if type(body) is not dict:
        raise TwilioProtocolError(31951, f"{event} must be an object")
    if event == "media":
        _exact_keys(body, frozenset({"payload"}), "media")
        payload = body["payload"]
        if type(payload) is not str:
            raise TwilioProtocolError(31951, "media.payload must be a string")
        data = _b64decode(payload)
        if data is None:
            raise TwilioProtocolError(31951, "media.payload is not valid base64")
        return ServerMedia(stream_sid=sid, payload=data)
    _exact_keys(body, frozenset({"name"}), "mark")
    return ServerMark(stream_sid=sid, name=_nonempty_str(body["name"], "mark.name"))
