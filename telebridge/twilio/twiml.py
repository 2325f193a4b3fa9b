"""TwiML documents telebridge answers Twilio with.

Why a module: every answer is built with ``twilio.twiml.voice_response.VoiceResponse`` (ElementTree underneath)
so caller-controlled text (parameter values, messages) is always XML-escaped; string concatenation would let
a crafted caller name inject TwiML. The checks here turn Twilio's silent failures (a ``ws://`` or query-string
stream URL is refused at call time, not at deploy time) into immediate ``ValueError``s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from twilio.twiml.voice_response import VoiceResponse

__all__ = ["connect_stream", "reject", "say_and_hangup", "dial", "say", "empty", "hang_up"]

# Characters XML 1.0 cannot carry even escaped (C0 controls except TAB/LF/CR, U+FFFE/U+FFFF, lone surrogates).
# ElementTree would write them raw and produce a document Twilio cannot parse.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def _xml_text(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if _XML_INVALID.search(value):
        raise ValueError(f"{what} contains characters XML cannot represent")
    return value


def _check_url(url: str, what: str, schemes: set[str]) -> None:
    _xml_text(url, what)
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes:
        raise ValueError(f"{what} must use {' or '.join(sorted(schemes))}://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"{what} has no host: {url!r}")
    if parts.fragment:
        raise ValueError(f"{what} must not have a fragment: {url!r}")


def connect_stream(
    stream_url: str,
    parameters: Mapping[str, str],
    status_callback: str | None = None,
    stream_name: str | None = None,
    *,
    allow_insecure: bool = False,
    action: str | None = None,
) -> str:
    """``<Connect><Stream>``: a bidirectional media stream to ``stream_url``.

    Twilio only dials ``wss://`` (``ws://`` is accepted here with ``allow_insecure=True`` for local tests) and
    drops query strings, so data travels as ``<Parameter>``s, which arrive in the ``start`` message's
    ``customParameters``. Parameters with empty values are skipped (Twilio would send them as empty strings
    at best; leaving them out keeps ``start`` small and meaningful). After the server closes the socket Twilio
    requests ``action`` (if given) and runs the TwiML it returns — the server decides there whether the call
    ended normally (hang up) or failed (apologise first), instead of dead air or a canned message.
    """
    schemes = {"wss", "ws"} if allow_insecure else {"wss"}
    _check_url(stream_url, "stream_url", schemes)
    if urlsplit(stream_url).query or "?" in stream_url:
        raise ValueError("stream_url must not carry a query string; pass data as parameters")
    response = VoiceResponse()
    if action is not None:
        _check_url(action, "action", {"https", "http"})
        connect = response.connect(action=action, method="POST")
    else:
        connect = response.connect()
    attrs: dict[str, str] = {"url": stream_url}
    if stream_name:
        attrs["name"] = _xml_text(stream_name, "stream_name")
    if status_callback is not None:
        _check_url(status_callback, "status_callback", {"https", "http"})
        attrs["status_callback"] = status_callback
        attrs["status_callback_method"] = "POST"
    stream = connect.stream(**attrs)
    for name, value in parameters.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"parameter names must be non-empty strings, got {name!r}")
        _xml_text(name, "parameter name")
        if value is None or value == "":
            continue
        stream.parameter(name=name, value=_xml_text(value, f"parameter {name!r}"))
    return str(response.to_xml())


def reject(reason: Literal["busy", "rejected"]) -> str:
    """``<Reject>``: refuse the call before answering (no charge for the caller's connection)."""
    if reason not in ("busy", "rejected"):
        raise ValueError(f"reason must be 'busy' or 'rejected', got {reason!r}")
    response = VoiceResponse()
    response.reject(reason=reason)
    return str(response.to_xml())


def say_and_hangup(message: str, *, voice: str | None = None, language: str | None = None) -> str:
    """``<Say>`` then ``<Hangup>``: a polite refusal, e.g. when every agent slot is busy."""
    if not _xml_text(message, "message").strip():
        raise ValueError("message must not be blank")
    response = VoiceResponse()
    response.say(message, voice=voice, language=language)
    response.hangup()
    return str(response.to_xml())


def hang_up() -> str:
    """``<Hangup>``: end the call (after our stream closed on purpose)."""
    response = VoiceResponse()
    response.hangup()
    return str(response.to_xml())


def dial(
    number: str,
    caller_id: str | None = None,
    *,
    timeout: int | None = None,
    whisper_url: str | None = None,
) -> str:
    """``<Dial>`` a transfer target: an E.164 number (``<Number>``) or a ``sip:``/``sips:`` URI (``<Sip>``).

    Anything else is refused: a transfer target usually comes from configuration or an agent's tool call, and
    a loose format is how a prompt-injected agent dials premium numbers. ``caller_id`` (E.164: Twilio accepts
    the calling number, the called number, or a number of the account or verified with it) is what the target
    sees; ``timeout`` how long it may ring (Twilio allows 5-600 s); ``whisper_url`` the TwiML Twilio runs for
    whoever answers, before the caller is connected (``<Number url>`` / ``<Sip url>``, requested with POST).
    """
    _xml_text(number, "number")
    if caller_id is not None and not _E164.fullmatch(caller_id):
        raise ValueError(f"caller_id must be an E.164 number, got {caller_id!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int) or not 5 <= timeout <= 600):
        raise ValueError(f"timeout must be whole seconds within 5..600, got {timeout!r}")
    noun: dict[str, str] = {}
    if whisper_url is not None:
        _check_url(whisper_url, "whisper_url", {"https", "http"})
        noun = {"url": whisper_url, "method": "POST"}
    response = VoiceResponse()
    target = response.dial(caller_id=caller_id, timeout=timeout)
    if _E164.fullmatch(number):
        target.number(number, **noun)
    elif number.lower().startswith(("sip:", "sips:")) and len(number) > 5 and not any(c.isspace() for c in number):
        target.sip(number, **noun)
    else:
        raise ValueError(f"number must be E.164 (+15551234567) or a sip: URI, got {number!r}")
    return str(response.to_xml())


def say(message: str, *, voice: str | None = None, language: str | None = None) -> str:
    """``<Say>`` alone: e.g. a transfer's whisper (once it ends, Twilio connects the two calls)."""
    if not _xml_text(message, "message").strip():
        raise ValueError("message must not be blank")
    response = VoiceResponse()
    response.say(message, voice=voice, language=language)
    return str(response.to_xml())


def empty() -> str:
    """``<Response/>``: nothing to do (for a whisper: connect the calls at once)."""
    return str(VoiceResponse().to_xml())
