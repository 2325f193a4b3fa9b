"""An outbound call as Twilio runs it after ``Calls.create``, with a scripted callee on the other end.

What Twilio does, and this does too, in order:

1. ``initiated`` then ``ringing`` status callbacks (only the ``StatusCallbackEvent``s asked for; the final status
   always), each form-encoded and signed (``X-Twilio-Signature``) like every Twilio request;
2. busy or unanswered callees end here: the final callback says ``CallStatus=busy`` / ``no-answer``;
3. once answered: the ``answered`` callback (``CallStatus=in-progress``) and the signed request for the TwiML
   ``Url`` with Twilio's outbound parameters (``Direction=outbound-api``, ``CallStatus=in-progress``, ``To``,
   ``From``, ``Called``, ``Caller``, …);
4. ``<Connect><Stream>``: the Media Stream with the callee's script (see :mod:`.stream`); with
   ``AsyncAmd``, the verdict (``AnsweredBy``, ``MachineDetectionDuration`` in ms) is POSTed, signed, to
   ``AsyncAmdStatusCallback`` while the stream runs;
5. the final ``completed`` callback with ``CallDuration``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .callee import Callee
from .constants import RATE
from .results import NoStreamInTwiml, SimulatedCall
from .run import open_stream, prepare_audio, run_stream
from .script import Play, Say
from .stream import StreamSession, TwilioApiHook
from .twiml import _sid, _signature, parse_twiml

log = logging.getLogger("telebridge.simulator.outbound")

__all__ = ["OutboundCallRequest", "OutboundResult", "run_outbound_call"]


@dataclass
class OutboundCallRequest:
    """What ``Calls.create`` asked for (Twilio's parameter names in snake_case)."""

    call_sid: str
    account_sid: str
    to: str
    from_: str
    url: str
    method: str = "POST"
    status_callback: str | None = None
    status_callback_events: Sequence[str] = ("completed",)
    machine_detection: str | None = None
    async_amd: bool = False
    amd_callback: str | None = None
    timeout: float = 60.0


@dataclass
class OutboundResult:
    call_sid: str
    status: str = "queued"
    answered_by: str | None = None
    duration: int = 0
    twiml: str | None = None
    call: SimulatedCall | None = None
    callbacks: list[tuple[str, dict[str, str], int]] = field(default_factory=list)
    """(URL path, form, HTTP status) of every request Twilio made to the application."""


class _Requests:
    """Signed, form-encoded requests to the application, as Twilio makes them."""

    def __init__(self, auth_token: str | None, server_url: str | None, result: OutboundResult, timeout: float) -> None:
        self.auth_token = auth_token
        self.server_url = server_url
        self.result = result
        self.http = httpx.AsyncClient(timeout=timeout)
        self.sequence = 0

    def _target(self, url: str) -> tuple[str, dict[str, str]]:
        headers = {"User-Agent": "TwilioProxy/1.1", "I-Twilio-Idempotency-Token": secrets.token_hex(16),
                   "Content-Type": "application/x-www-form-urlencoded"}
        if not self.server_url:
            return url, headers
        server, original = urlsplit(self.server_url), urlsplit(url)
        headers["X-Forwarded-Proto"] = original.scheme
        headers["X-Forwarded-Host"] = original.netloc
        return urlunsplit((server.scheme, server.netloc, original.path, original.query, "")), headers

    async def post(self, url: str, form: dict[str, str]) -> httpx.Response | None:
        target, headers = self._target(url)
        if self.auth_token:
            headers["X-Twilio-Signature"] = _signature(url, form, self.auth_token)
        try:
            response = await self.http.post(target, data=form, headers=headers)
        except httpx.HTTPError as exc:  # Twilio logs a warning (11200) and carries on
            log.warning("request to %s failed: %r", urlsplit(url).path, exc)
            self.result.callbacks.append((urlsplit(url).path, form, 0))
            return None
        self.result.callbacks.append((urlsplit(url).path, form, response.status_code))
        return response

    async def aclose(self) -> None:
        await self.http.aclose()


def _call_fields(req: OutboundCallRequest, status: str) -> dict[str, str]:
    return {
        "AccountSid": req.account_sid, "ApiVersion": "2010-04-01", "CallSid": req.call_sid, "CallStatus": status,
        "Called": req.to, "CalledCity": "SAN FRANCISCO", "CalledCountry": "US", "CalledState": "CA",
        "CalledZip": "94105", "Caller": req.from_, "CallerCity": "", "CallerCountry": "US", "CallerState": "",
        "CallerZip": "", "Direction": "outbound-api", "From": req.from_, "FromCity": "", "FromCountry": "US",
        "FromState": "", "FromZip": "", "To": req.to, "ToCity": "SAN FRANCISCO", "ToCountry": "US",
        "ToState": "CA", "ToZip": "94105",
    }


async def _status(requests: _Requests, req: OutboundCallRequest, event: str, status: str,
                  extra: dict[str, str] | None = None) -> None:
    requests.result.status = status
    if not req.status_callback or (event != "completed" and event not in req.status_callback_events):
        return
    requests.sequence += 1
    form = _call_fields(req, status)
    form.update({"Timestamp": formatdate(usegmt=True), "CallbackSource": "call-progress-events",
                 "SequenceNumber": str(requests.sequence - 1)})
    form.update(extra or {})
    await requests.post(req.status_callback, form)


def _verdict_time(callee: Callee, audio: dict[int, Any]) -> float:
    """When AMD decides: ``verdict_delay`` after the audio of action ``verdict_after`` (played back to back)."""
    t = 0.0
    for i, action in enumerate(callee.script):
        if isinstance(action, (Say, Play)):
            if action.at is not None:
                t = max(t, action.at)
            t += len(audio.get(i, ())) / RATE
        if i >= callee.verdict_after:
            break
    return t + callee.verdict_delay


async def run_outbound_call(
    req: OutboundCallRequest,
    callee: Callee,
    *,
    auth_token: str | None,
    server_url: str | None = None,
    twilio_api: TwilioApiHook | None = None,
    on_status: Callable[[str], None] | None = None,
    transcribe: bool = False,
    realtime: bool = True,
    http_timeout: float = 15.0,
) -> OutboundResult:
    """Play Twilio and ``callee`` for one created call; ``server_url`` maps the application's (public) URLs to
    an address we can reach (signatures stay over the original URLs)."""
    result = OutboundResult(req.call_sid)
    requests = _Requests(auth_token, server_url, result, http_timeout)

    async def status(event: str, value: str, extra: dict[str, str] | None = None) -> None:
        if on_status is not None:
            on_status(value)
        await _status(requests, req, event, value, extra)

    try:
        await status("initiated", "initiated")
        if callee.kind == "busy":
            await asyncio.sleep(callee.ring_seconds)
            await status("completed", "busy", {"CallDuration": "0", "Duration": "0"})
            return result
        await status("ringing", "ringing")
        if callee.kind == "no-answer":
            await asyncio.sleep(min(callee.ring_seconds, req.timeout))
            await status("completed", "no-answer", {"CallDuration": "0", "Duration": "0"})
            return result
        audio = await prepare_audio(callee.script)  # before answering: model time never disturbs the clock
        await asyncio.sleep(callee.ring_seconds)
        answered = time.monotonic()
        await status("answered", "in-progress")
        response = await requests.post(req.url, _call_fields(req, "in-progress"))
        if response is None or response.status_code >= 300:
            await status("completed", "failed", {"CallDuration": "0", "Duration": "0"})
            return result
        result.twiml = response.text
        try:
            target = parse_twiml(response.text)
        except NoStreamInTwiml:  # e.g. <Say> + <Hangup>: nothing to stream
            await status("completed", "completed", {"CallDuration": "1", "Duration": "1"})
            return result
        stream_sid = _sid("MZ")
        amd_verdict = callee.answered_by if req.machine_detection and req.async_amd else None

        async def amd(session: StreamSession) -> None:
            if amd_verdict is None or not req.amd_callback:
                return
            at = _verdict_time(callee, audio)
            while session.now < at:
                await asyncio.sleep(0.02)
            result.answered_by = amd_verdict
            session.note("twilio", "amd", amd_verdict)
            await requests.post(req.amd_callback, {
                "AccountSid": req.account_sid, "CallSid": req.call_sid, "AnsweredBy": amd_verdict,
                "MachineDetectionDuration": str(int(at * 1000)),
            })

        ws = await open_stream(server_url or req.url, target, auth_token, http_timeout)
        result.call = await run_stream(
            ws, twiml=response.text, target=target, call_sid=req.call_sid, stream_sid=stream_sid,
            account_sid=req.account_sid, script=callee.script, audio=audio, start_params=target.parameters,
            duration=callee.duration, end_when_quiet=None, realtime=realtime, transcribe=transcribe,
            twilio_api=twilio_api, during=amd,
        )
        seconds = str(max(1, round(time.monotonic() - answered)))
        result.duration = int(seconds)
        await status("completed", "completed", {"CallDuration": seconds, "Duration": str(-(-int(seconds) // 60))})
        return result
    except Exception:
        log.exception("simulated outbound call %s failed", req.call_sid)
        await status("completed", "failed", {"CallDuration": "0", "Duration": "0"})
        return result
    finally:
        await requests.aclose()
