"""Twilio's HTTP side of a call: the form it POSTs to a webhook, its signature, and reading the TwiML answer."""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .results import NoStreamInTwiml, SimulatorError

__all__ = ["StreamTarget", "parse_twiml"]


@dataclass(frozen=True)
class StreamTarget:
    """What ``<Connect><Stream>`` asked for."""

    url: str
    parameters: dict[str, str]
    warnings: tuple[str, ...] = ()


def parse_twiml(twiml: str) -> StreamTarget:
    """Find ``<Connect><Stream url>`` and its ``<Parameter>``s; raise :class:`NoStreamInTwiml` otherwise."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise NoStreamInTwiml(twiml, f"TwiML is not well-formed XML ({exc})") from None
    if root.tag != "Response":
        raise NoStreamInTwiml(twiml, f"TwiML root is <{root.tag}>, not <Response>")
    stream = root.find("./Connect/Stream")
    if stream is None:
        why = (
            "TwiML has <Start><Stream> (receive-only), not <Connect><Stream>"
            if root.find("./Start/Stream") is not None
            else "TwiML has no <Connect><Stream>"
        )
        raise NoStreamInTwiml(twiml, why)
    url = stream.get("url")
    if not url:
        raise NoStreamInTwiml(twiml, "<Stream> has no url")
    params: dict[str, str] = {}
    for p in stream.findall("./Parameter"):
        name = p.get("name")
        if name is not None:
            params[name] = p.get("value", "")
    warnings: list[str] = []
    parts = urlsplit(url)
    if parts.scheme != "wss":
        warnings.append(f"Stream url must be wss:// for Twilio, got {url!r}")
    if parts.query:
        warnings.append(f"Stream url must not carry a query string (use <Parameter>), got {url!r}")
    return StreamTarget(url=url, parameters=params, warnings=tuple(warnings))


def _dial_url(server_url: str, advertised: str) -> str:
    """The advertised stream path (and query) on the host we can actually reach, http(s) mapped to ws(s)."""
    server = urlsplit(server_url)
    adv = urlsplit(advertised)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(server.scheme)
    if scheme is None:
        raise SimulatorError(f"server url must be http(s) or ws(s), got {server_url!r}")
    return urlunsplit((scheme, server.netloc, adv.path or "/", adv.query, ""))


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _webhook_form(
    *, account_sid: str, call_sid: str, from_number: str, to_number: str, extra: Mapping[str, str]
) -> dict[str, str]:
    """The fields Twilio POSTs for an inbound call (geography made up, but shaped like Twilio's)."""
    form = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to_number,
        "CalledCity": "SAN FRANCISCO",
        "CalledCountry": "US",
        "CalledState": "CA",
        "CalledZip": "94105",
        "Caller": from_number,
        "CallerCity": "OAKLAND",
        "CallerCountry": "US",
        "CallerState": "CA",
        "CallerZip": "94612",
        "Direction": "inbound",
        "From": from_number,
        "FromCity": "OAKLAND",
        "FromCountry": "US",
        "FromState": "CA",
        "FromZip": "94612",
        "To": to_number,
        "ToCity": "SAN FRANCISCO",
        "ToCountry": "US",
        "ToState": "CA",
        "ToZip": "94105",
    }
    form.update({str(k): str(v) for k, v in extra.items()})
    return form


def _signature(url: str, params: Mapping[str, str] | None, auth_token: str) -> str:
    from telebridge.twilio.signature import compute_signature

    return compute_signature(url, params, auth_token)
