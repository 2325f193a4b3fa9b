"""A local fake of Twilio's REST API (the Calls resource), speaking its real wire protocol.

What the real API does and this fake does too:

* ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``, form-encoded, HTTP basic auth
  (``AccountSid:AuthToken``), fields ``Status=completed`` (hang up) or ``Twiml=<Response>…`` (run new TwiML:
  the ``<Connect><Stream>`` ends); ``GET`` on the same path fetches the call.
* JSON call resources (``sid``, ``account_sid``, ``status``, ``uri``, …) on success; errors as
  ``{"code", "message", "more_info", "status"}``: 404 / 20404 for an unknown call, 401 / 20003 for bad
  credentials, 400 / 21220 when updating a call that is not in progress.

Calls exist once a simulated call registers them (it implements :class:`telebridge.simulator.TwilioApiHook`),
and a REST update acts on the live simulated call through its :class:`~telebridge.simulator.CallHandle`: the
stream gets ``stop`` and closes, as with Twilio. The server runs in its own thread and loop, so one instance can
serve a whole test module. Every request is recorded in ``requests``.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from telebridge.simulator import CallHandle

API_VERSION = "2010-04-01"


@dataclass
class RecordedRequest:
    method: str
    path: str
    form: dict[str, str]
    auth: tuple[str, str] | None
    user_agent: str


@dataclass
class FakeCall:
    sid: str
    account_sid: str
    status: str = "in-progress"
    twiml: str | None = None
    handle: CallHandle | None = field(default=None, repr=False)
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    ended: datetime | None = None


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
        self.app = Starlette(routes=[Route(path, self._call, methods=["GET", "POST"])])

    # --- TwilioApiHook (called by the simulator, on its own loop) -----------------------------------------------
    def call_started(self, handle: CallHandle) -> None:
        with self._lock:
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
                    if handle is not None:
                        handle.redirect(form["Twiml"])
                elif form.get("Status"):
                    return _error(400, 21218, f"Invalid parameter: Status {form['Status']!r}")
            return JSONResponse(self._resource(call))

    @staticmethod
    def _resource(call: FakeCall) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{call.account_sid}/Calls/{call.sid}.json"
        ended = call.ended
        duration = str(int((ended - call.created).total_seconds())) if ended else None
        return {
            "sid": call.sid,
            "account_sid": call.account_sid,
            "api_version": API_VERSION,
            "status": call.status,
            "direction": "inbound",
            "from": "+15551230001",
            "to": "+15559870002",
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


__all__ = ["FakeTwilioApi", "FakeTwilioServer", "FakeCall", "RecordedRequest"]
