"""A local fake of Twilio's REST API (the Calls resource), speaking its real wire protocol.

What the real API does and this fake does too:

* ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``, form-encoded, HTTP basic auth
  (``AccountSid:AuthToken``), fields ``Status=completed`` (hang up) or ``Twiml=<Response>…`` (run new TwiML:
  the ``<Connect><Stream>`` ends); ``GET`` on the same path fetches the call.
* JSON call resources (``sid``, ``account_sid``, ``status``, ``uri``, …) on success; errors as
  ``{"code", "message", "more_info", "status"}``: 404 / 20404 for an unknown call, 401 / 20003 for bad
  credentials, 400 / 21220 when updating a call that is not in progress.

``POST …/Calls.json`` places an outbound call the way Twilio does (see ``_create_call``). Inbound calls exist
once a simulated call registers them (it implements :class:`telebridge.simulator.TwilioApiHook`),
and a REST update acts on the live simulated call through its :class:`~telebridge.simulator.CallHandle`: the
stream gets ``stop`` and closes, as with Twilio. The server runs in its own thread and loop, so one instance can
serve a whole test module. Every request is recorded in ``requests``; the TwiML of each update in the call's
``twiml`` (the latest) and ``twiml_updates`` (all). When new TwiML ``<Dial>``s a ``<Number url>`` / ``<Sip url>``
(a transfer's whisper), the fake plays the answering target: it requests that URL signed, with the child leg's
parameters, as Twilio does once the target picks up, and records the exchange in ``dial_url_requests``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from telebridge.simulator import CallHandle
from telebridge.simulator.callee import Callee, human
from telebridge.simulator.outbound import OutboundCallRequest, OutboundResult, run_outbound_call

API_VERSION = "2010-04-01"


@dataclass
class RecordedRequest:
    method: str
    path: str
    form: dict[str, str]
    auth: tuple[str, str] | None
    user_agent: str


@dataclass
class DialUrlRequest:
    """Twilio's request for a ``<Number url>`` / ``<Sip url>`` once the dialled party answered, and the answer."""

    url: str
    form: dict[str, str]
    status: int
    body: str


@dataclass
class FakeCall:
    sid: str
    account_sid: str
    status: str = "in-progress"
    twiml: str | None = None
    handle: CallHandle | None = field(default=None, repr=False)
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    ended: datetime | None = None
    direction: str = "inbound"
    to: str = "+15559870002"
    from_: str = "+15551230001"
    answered_by: str | None = None
    duration: int | None = None
    create_form: dict[str, str] = field(default_factory=dict)
    twiml_updates: list[str] = field(default_factory=list)


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
        status_code=status,
    )


class FakeTwilioApi:
    """The fake's state and its Starlette app. ``auth_token`` is every account's token."""

    def __init__(self, auth_token: str) -> None:
        self.auth_token = auth_token
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        path = f"/{API_VERSION}/Accounts/{{account_sid}}/Calls/{{call_sid}}.json"
        calls_path = f"/{API_VERSION}/Accounts/{{account_sid}}/Calls.json"
        self.app = Starlette(routes=[Route(path, self._call, methods=["GET", "POST"]),
                                     Route(calls_path, self._create_call, methods=["POST"])])
        # Outbound calls (Calls.create): who answers each number, and what happened.
        self.callees: dict[str, Callee] = {}
        self.default_callee: Callable[[], Callee] = human
        self.server_url: str | None = None  # where the application really listens (its public URL otherwise)
        self.outbound_results: dict[str, OutboundResult] = {}
        self.transcribe_outbound = False  # Whisper on what the callee heard (tests that check the words)
        self._outbound_tasks: set[asyncio.Task] = set()
        self.dial_url_requests: list[DialUrlRequest] = []  # the whisper requests of transfers (see the docstring)
        self.numbers = FakeIncomingNumbers(self)  # IncomingPhoneNumbers: see the block at the end of this file
        self.app.router.routes.extend(self.numbers.routes())

    # --- TwilioApiHook (called by the simulator, on its own loop) -----------------------------------------------
    def call_started(self, handle: CallHandle) -> None:
        with self._lock:
            existing = self.calls.get(handle.call_sid)
            if existing is not None and existing.direction == "outbound-api":
                existing.handle = handle
                return
            self.calls[handle.call_sid] = FakeCall(handle.call_sid, handle.account_sid, handle=handle)

    def call_ended(self, call_sid: str) -> None:
        with self._lock:
            call = self.calls.get(call_sid)
            if call is not None and call.status == "in-progress":
                call.status = "completed"
                call.ended = datetime.now(timezone.utc)
            if call is not None:
                call.handle = None

    def requests_for(self, call_sid: str) -> list[RecordedRequest]:
        return [r for r in self.requests if f"/Calls/{call_sid}.json" in r.path]

    # --- the HTTP API ---------------------------------------------------------------------------------------------
    @staticmethod
    def _basic_auth(request: Request) -> tuple[str, str] | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user, password

    async def _call(self, request: Request) -> JSONResponse:
        account_sid = request.path_params["account_sid"]
        call_sid = request.path_params["call_sid"]
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        auth = self._basic_auth(request)
        self.requests.append(RecordedRequest(request.method, request.url.path, form, auth,
                                             request.headers.get("user-agent", "")))
        if auth is None or auth[1] != self.auth_token or not auth[0].startswith("AC"):
            return _error(401, 20003, "Authenticate")
        with self._lock:
            call = self.calls.get(call_sid)
            if call is None or call.account_sid != account_sid:
                return _error(404, 20404, f"The requested resource /{API_VERSION}/Accounts/{account_sid}/Calls/"
                                          f"{call_sid}.json was not found")
            if request.method == "POST":
                if "Status" in form and "Twiml" in form:
                    return _error(400, 21218, "Invalid parameter: Status and Twiml are mutually exclusive")
                if call.status != "in-progress":
                    return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
                handle = call.handle
                if form.get("Status") == "completed":
                    call.status, call.ended = "completed", datetime.now(timezone.utc)
                    if handle is not None:
                        handle.complete()
                elif "Twiml" in form:
                    call.twiml = form["Twiml"]
                    call.twiml_updates.append(form["Twiml"])
                    if handle is not None:
                        handle.redirect(form["Twiml"])
                    self._answer_dial(call, form["Twiml"])
                elif form.get("Status"):
                    return _error(400, 21218, f"Invalid parameter: Status {form['Status']!r}")
            return JSONResponse(self._resource(call))

    # --- <Dial><Number url>: the target answers and Twilio asks the application what to play to it ------------
    def _answer_dial(self, call: FakeCall, twiml: str) -> None:
        import xml.etree.ElementTree as ET

        try:
            dial = ET.fromstring(twiml).find("./Dial")
        except ET.ParseError:
            return
        noun = None if dial is None else next((n for n in dial if n.tag in ("Number", "Sip") and n.get("url")), None)
        if dial is None or noun is None:
            return
        child = "CA" + secrets.token_hex(16)
        form = {"AccountSid": call.account_sid, "CallSid": child, "ParentCallSid": call.sid,
                "From": dial.get("callerId") or call.from_, "To": (noun.text or "").strip(),
                "CallStatus": "in-progress", "Direction": "outbound-dial", "ApiVersion": API_VERSION}
        task = asyncio.get_running_loop().create_task(self._request_dial_url(noun.get("url", ""), form))
        self._outbound_tasks.add(task)
        task.add_done_callback(self._outbound_tasks.discard)

    async def _request_dial_url(self, url: str, form: dict[str, str]) -> None:
        from telebridge.twilio.signature import compute_signature

        headers = {"X-Twilio-Signature": compute_signature(url, form, self.auth_token),
                   "User-Agent": "TwilioProxy/1.1"}
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(url, data=form, headers=headers)
            status, body = response.status_code, response.text
        except httpx.HTTPError as exc:
            status, body = 0, repr(exc)
        self.dial_url_requests.append(DialUrlRequest(url, form, status, body))

    async def wait_dial_url(self, parent_sid: str, timeout: float = 10.0) -> DialUrlRequest:
        deadline = time.monotonic() + timeout
        while True:
            for req in self.dial_url_requests:
                if req.form.get("ParentCallSid") == parent_sid:
                    return req
            if time.monotonic() > deadline:
                raise AssertionError(f"no <Dial> url was requested for call {parent_sid}")
            await asyncio.sleep(0.05)

    # --- Calls.create: placing an outbound call the way Twilio does ------------------------------------------------
    # ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json``: Basic auth (20003), ``To`` / ``From`` E.164 (21211 /
    # 21212 with Twilio's error JSON), ``Url`` or ``Twiml`` required (21205); 201 with the call resource
    # (``status: queued``), then, asynchronously on this loop, the simulator plays Twilio and the callee
    # (``callees[To]``, else ``default_callee()``): status callbacks, the signed TwiML request, the stream, AMD.
    _E164 = re.compile(r"\+[1-9][0-9]{6,14}")

    async def _create_call(self, request: Request) -> JSONResponse:
        account_sid = request.path_params["account_sid"]
        raw = await request.form()
        form = {k: v for k, v in raw.items() if isinstance(v, str)}
        events = [v for v in raw.getlist("StatusCallbackEvent") if isinstance(v, str)]
        auth = self._basic_auth(request)
        self.requests.append(RecordedRequest(request.method, request.url.path, form, auth,
                                             request.headers.get("user-agent", "")))
        api_keys = getattr(getattr(self, "numbers", None), "api_keys", {})
        if auth is None or not ((auth[0] == account_sid and auth[1] == self.auth_token)
                                or (auth[0].startswith("SK") and api_keys.get(auth[0]) == auth[1])):
            return _error(401, 20003, "Authenticate")
        to, from_ = form.get("To", ""), form.get("From", "")
        if not self._E164.fullmatch(to):
            return _error(400, 21211, f"Invalid 'To' Phone Number: {to[:3]}XXXX")
        if not self._E164.fullmatch(from_):
            return _error(400, 21212, f"Invalid 'From' Phone Number: {from_[:3]}XXXX")
        if not form.get("Url") and not form.get("Twiml"):
            return _error(400, 21205, "Url parameter is required.")
        sid = "CA" + secrets.token_hex(16)
        call = FakeCall(sid, account_sid, status="queued", direction="outbound-api", to=to, from_=from_,
                        create_form=form)
        with self._lock:
            self.calls[sid] = call
        req = OutboundCallRequest(
            call_sid=sid, account_sid=account_sid, to=to, from_=from_, url=form.get("Url", ""),
            status_callback=form.get("StatusCallback"), status_callback_events=tuple(events) or ("completed",),
            machine_detection=form.get("MachineDetection"), async_amd=form.get("AsyncAmd", "").lower() == "true",
            amd_callback=form.get("AsyncAmdStatusCallback"), timeout=float(form.get("Timeout", 60)),
        )
        callee = self.callees.get(to) or self.default_callee()
        task = asyncio.get_running_loop().create_task(self._run_outbound(call, req, callee))
        self._outbound_tasks.add(task)
        task.add_done_callback(self._outbound_tasks.discard)
        return JSONResponse(self._resource(call), status_code=201)

    async def _run_outbound(self, call: FakeCall, req: OutboundCallRequest, callee: Callee) -> None:
        def on_status(status: str) -> None:
            with self._lock:
                if call.status in ("completed", "busy", "no-answer", "failed", "canceled"):
                    return
                call.status = status
                if status in ("completed", "busy", "no-answer", "failed"):
                    call.ended = datetime.now(timezone.utc)

        result = await run_outbound_call(req, callee, auth_token=self.auth_token, server_url=self.server_url,
                                         twilio_api=self, on_status=on_status, transcribe=self.transcribe_outbound)
        with self._lock:
            call.answered_by = result.answered_by
            call.duration = result.duration
            self.outbound_results[call.sid] = result

    async def wait_outbound(self, call_sid: str, timeout: float = 60.0) -> OutboundResult:
        """The simulated outbound call's result, once it has ended (call from any thread's event loop)."""
        deadline = time.monotonic() + timeout
        while call_sid not in self.outbound_results:
            if time.monotonic() > deadline:
                raise AssertionError(f"outbound call {call_sid} did not end within {timeout} s")
            await asyncio.sleep(0.05)
        return self.outbound_results[call_sid]

    @staticmethod
    def _resource(call: FakeCall) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{call.account_sid}/Calls/{call.sid}.json"
        ended = call.ended
        duration = str(int((ended - call.created).total_seconds())) if ended else None
        if call.duration is not None:
            duration = str(call.duration)
        return {
            "sid": call.sid,
            "account_sid": call.account_sid,
            "api_version": API_VERSION,
            "status": call.status,
            "direction": call.direction,
            "from": call.from_,
            "to": call.to,
            "answered_by": call.answered_by,
            "date_created": format_datetime(call.created, usegmt=True),
            "date_updated": format_datetime(datetime.now(timezone.utc), usegmt=True),
            "start_time": format_datetime(call.created, usegmt=True),
            "end_time": format_datetime(ended, usegmt=True) if ended else None,
            "duration": duration,
            "price": None,
            "price_unit": "USD",
            "parent_call_sid": None,
            "uri": uri,
            "subresource_uris": {"recordings": uri.replace(".json", "/Recordings.json")},
        }


class FakeTwilioServer:
    """Serves a :class:`FakeTwilioApi` with uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, api: FakeTwilioApi) -> None:
        self.api = api
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(api.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True,
                                       name=f"fake-twilio-{self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeTwilioServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake Twilio API did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


__all__ = ["FakeTwilioApi", "FakeTwilioServer", "FakeCall", "RecordedRequest", "DialUrlRequest"]


# =================================================================================================================
# IncomingPhoneNumbers (telebridge numbers list / configure, telebridge doctor). Kept apart from the Calls part.
#
# * ``GET /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json`` — ``PhoneNumber`` / ``FriendlyName``
#   filters, ``PageSize`` (default 50) and ``Page``; Twilio's paging envelope (``incoming_phone_numbers``, ``uri``,
#   ``first_page_uri``, ``next_page_uri``, ``previous_page_uri``, ``page``, ``page_size``, ``start``, ``end``).
# * ``GET`` / ``POST /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers/{Sid}.json`` — fetch / update with
#   Twilio's form names. Setting ``VoiceApplicationSid`` clears ``TrunkSid`` and vice versa, as Twilio does.
# * Basic auth: the account SID (which must be the path's) with the token, or an API key (``api_keys``) with its
#   secret; else 401 / 20003. Unknown number: 404 / 20404. A URL field that is not http(s): 400 / 21502. A method
#   field other than GET/POST: 400 / 21208 (Twilio's "invalid method" style). Every request lands in ``requests``.
# =================================================================================================================

_NUMBER_FIELDS = {  # Twilio form name -> resource (JSON) name
    "FriendlyName": "friendly_name", "VoiceUrl": "voice_url", "VoiceMethod": "voice_method",
    "VoiceFallbackUrl": "voice_fallback_url", "VoiceFallbackMethod": "voice_fallback_method",
    "StatusCallback": "status_callback", "StatusCallbackMethod": "status_callback_method",
    "VoiceApplicationSid": "voice_application_sid", "TrunkSid": "trunk_sid", "VoiceCallerIdLookup":
    "voice_caller_id_lookup", "SmsUrl": "sms_url", "SmsMethod": "sms_method",
}
_URL_FIELDS = {"VoiceUrl", "VoiceFallbackUrl", "StatusCallback", "SmsUrl"}
_METHOD_FIELDS = {"VoiceMethod", "VoiceFallbackMethod", "StatusCallbackMethod", "SmsMethod"}


@dataclass
class FakeNumber:
    sid: str
    account_sid: str
    phone_number: str
    fields: dict[str, Any] = field(default_factory=dict)  # resource names: voice_url, trunk_sid, …
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    updated: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def resource(self) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/IncomingPhoneNumbers/{self.sid}.json"
        body: dict[str, Any] = {name: None for name in _NUMBER_FIELDS.values()}
        body.update({"voice_method": "POST", "voice_fallback_method": "POST", "status_callback_method": "POST",
                     "sms_method": "POST", "voice_caller_id_lookup": False, "friendly_name": self.phone_number})
        body.update(self.fields)
        body.update({
            "sid": self.sid, "account_sid": self.account_sid, "phone_number": self.phone_number,
            "api_version": API_VERSION, "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
            "date_created": format_datetime(self.created, usegmt=True),
            "date_updated": format_datetime(self.updated, usegmt=True),
            "origin": "twilio", "status": "in-use", "beta": False, "emergency_status": "Inactive",
            "voice_receive_mode": "voice", "uri": uri,
            "subresource_uris": {"assigned_add_ons": uri.replace(".json", "/AssignedAddOns.json")},
        })
        return body


class FakeIncomingNumbers:
    """The IncomingPhoneNumbers resource of :class:`FakeTwilioApi` (``api.numbers``)."""

    def __init__(self, api: FakeTwilioApi) -> None:
        self.api = api
        self.by_sid: dict[str, FakeNumber] = {}
        self.api_keys: dict[str, str] = {}  # SK… -> secret, accepted like the auth token

    def add(self, account_sid: str, phone_number: str, **fields: Any) -> FakeNumber:
        """A number on ``account_sid``; ``fields`` use resource names (``voice_url=…``, ``trunk_sid=…``)."""
        sid = "PN" + f"{len(self.by_sid) + 1:032x}"
        number = FakeNumber(sid, account_sid, phone_number, dict(fields))
        self.by_sid[sid] = number
        return number

    def get(self, phone_number: str) -> FakeNumber:
        return next(n for n in self.by_sid.values() if n.phone_number == phone_number)

    def updates(self, phone_number: str | None = None) -> list[RecordedRequest]:
        """The recorded update (POST) requests, optionally for one number."""
        sid = self.get(phone_number).sid if phone_number else ""
        return [r for r in self.api.requests
                if r.method == "POST" and "/IncomingPhoneNumbers/" in r.path and sid in r.path]

    def routes(self) -> list[Route]:
        base = f"/{API_VERSION}/Accounts/{{account_sid}}/IncomingPhoneNumbers"
        return [Route(base + ".json", self._list, methods=["GET"]),
                Route(base + "/{sid}.json", self._instance, methods=["GET", "POST"])]

    async def _authorized(self, request: Request) -> tuple[dict[str, str], JSONResponse | None]:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        auth = FakeTwilioApi._basic_auth(request)
        self.api.requests.append(RecordedRequest(request.method, request.url.path, form, auth,
                                                 request.headers.get("user-agent", "")))
        account = request.path_params["account_sid"]
        ok = auth is not None and (
            (auth[0] == account and auth[1] == self.api.auth_token)
            or (auth[0].startswith("SK") and self.api_keys.get(auth[0]) == auth[1]))
        return form, (None if ok else _error(401, 20003, "Authenticate"))

    async def _list(self, request: Request) -> JSONResponse:
        _, denied = await self._authorized(request)
        if denied is not None:
            return denied
        account = request.path_params["account_sid"]
        q = request.query_params
        try:
            size = max(1, min(1000, int(q.get("PageSize", "50"))))
            page = max(0, int(q.get("Page", "0")))
        except ValueError:
            return _error(400, 20001, "Invalid paging parameter")
        wanted, friendly = q.get("PhoneNumber"), q.get("FriendlyName")
        matches = [n for n in sorted(self.by_sid.values(), key=lambda n: n.sid) if n.account_sid == account
                   and (not wanted or n.phone_number == wanted)
                   and (not friendly or n.resource()["friendly_name"] == friendly)]
        chunk = matches[page * size:(page + 1) * size]
        path = f"/{API_VERSION}/Accounts/{account}/IncomingPhoneNumbers.json"

        def page_uri(p: int) -> str:
            token = f"&PageToken=PA{chunk[-1].sid}" if p > page and chunk else ""
            return f"{path}?PageSize={size}&Page={p}{token}"

        more = (page + 1) * size < len(matches)
        return JSONResponse({
            "incoming_phone_numbers": [n.resource() for n in chunk],
            "uri": page_uri(page), "first_page_uri": f"{path}?PageSize={size}&Page=0",
            "next_page_uri": page_uri(page + 1) if more else None,
            "previous_page_uri": f"{path}?PageSize={size}&Page={page - 1}" if page else None,
            "page": page, "page_size": size, "start": page * size, "end": page * size + max(len(chunk) - 1, 0),
        })

    async def _instance(self, request: Request) -> JSONResponse:
        form, denied = await self._authorized(request)
        if denied is not None:
            return denied
        account, sid = request.path_params["account_sid"], request.path_params["sid"]
        number = self.by_sid.get(sid)
        if number is None or number.account_sid != account:
            return _error(404, 20404, f"The requested resource {request.url.path} was not found")
        if request.method == "POST":
            for name, value in form.items():
                if name in _URL_FIELDS and value and not value.startswith(("http://", "https://")):
                    return _error(400, 21502, f"Invalid {name}: {value}")
                if name in _METHOD_FIELDS and value.upper() not in ("GET", "POST"):
                    return _error(400, 21208, f"Invalid {name}: {value}")
            for name, value in form.items():
                if name not in _NUMBER_FIELDS:
                    continue
                number.fields[_NUMBER_FIELDS[name]] = (value.upper() if name in _METHOD_FIELDS else value) or None
                if name == "VoiceApplicationSid" and value:
                    number.fields["trunk_sid"] = None
                if name == "TrunkSid" and value:
                    number.fields["voice_application_sid"] = None
            number.updated = datetime.now(timezone.utc)
        return JSONResponse(number.resource())


__all__ += ["FakeIncomingNumbers", "FakeNumber"]
