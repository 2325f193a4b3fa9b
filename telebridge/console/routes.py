"""``/console``: the page, its JSON API, the live feed (Server-Sent Events) and an operator's actions.

Every path is behind the access middleware's ``console`` policy (:mod:`telebridge.security.policy`): the page,
its static files and the login answer without a credential once one is configured (they hold no data); the rest
needs ``TELEBRIDGE_CONSOLE_TOKEN`` or an API key as a bearer credential, or the login cookie. With neither
configured, everything here answers loopback clients only.

API (JSON; calls are the hub's dictionaries, see :mod:`.hub`):

* ``GET /console/api/session`` -- how this request got in (``via``: loopback, console, key, session).
* ``POST /console/login`` ``{"token": …}`` -- sets the session cookie (401 for a wrong token);
  ``POST /console/logout`` clears it.
* ``GET /console/api/calls`` -- live calls in detail, past calls (the hub's, then recordings on disk), the
  last hour's per-minute figures.
* ``GET /console/api/calls/{id}`` -- one call (live, past, or from its recording): transcript, latency, timeline.
* ``GET /console/api/events`` -- ``text/event-stream``: a ``snapshot``, then ``call``, ``state``, ``entry``,
  ``entry_removed``, ``latency``, ``mark`` (the timeline), ``levels``, ``stats``, ``ended`` events (each ``data:`` a JSON object with its
  ``type``); ``dropped`` when this watcher fell too far behind (reconnect for a fresh snapshot).
* ``GET /console/api/elsewhere`` -- calls other instances sharing Redis run now (:mod:`.elsewhere`).
* ``POST /console/api/calls/{id}/hangup`` -- 202: the call is being ended (a phone call on another instance:
  through Twilio's REST API).
* ``POST /console/api/calls/{id}/transfer`` ``{"target": "+14155550123"}`` -- 200 once Twilio took it.
* ``WS /console/api/calls/{id}/listen`` -- listen in (24 kHz PCM16, caller and agent mixed), only while the
  call is recorded with consent (:mod:`.listen`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..security import Refusal, access_of
from ..security.middleware import refusal_response
from .auth import CONSOLE_LABEL
from .elsewhere import calls_elsewhere, hang_up_elsewhere
from .recordings import find_recording, list_recordings, recording_detail
from .service import ActionError, Console

log = logging.getLogger("telebridge.console")

__all__ = ["routes", "STATIC", "e164"]

STATIC = Path(__file__).parent / "static"
KEEPALIVE = 15.0  # seconds between SSE comments on a quiet feed (proxies close idle streams)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
NO_STORE = {"Cache-Control": "no-store"}


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=1024)


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = Field(min_length=1, max_length=64)


def e164(target: str) -> str:
    """``target`` as an E.164 number, or ValueError saying what is wrong with it (in words an operator reads)."""
    text = target.strip()
    if not text.startswith("+"):
        raise ValueError("enter the number in international form: + and the country code, e.g. +14155550123")
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        reason = str(exc).split(") ", 1)[-1].rstrip(".")
        raise ValueError(f"{text[:24]!r} is not a phone number: {reason}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"{text[:24]!r} is not a valid phone number for its country code")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return refusal_response(Refusal(status, code, message))


def _console(request: Request) -> Console:
    return request.app.state.runtime.console  # type: ignore[no-any-return]


async def _body(request: Request, model: type[BaseModel]) -> Any:
    """The JSON (or form) body as ``model``, or the 422 response to answer with."""
    try:
        if request.headers.get("content-type", "").startswith("application/json"):
            raw = await request.json()
        else:
            raw = dict(await request.form())
        return model.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        detail = exc.errors(include_url=False)[0]["msg"] if isinstance(exc, ValidationError) else "not valid JSON"
        return _error(422, "invalid_request", f"invalid request body: {detail}")


# --- the page and the login ---------------------------------------------------------------------------------------
async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)


async def session_info(request: Request) -> JSONResponse:
    access = access_of(request)
    guard = request.app.state.guard
    return JSONResponse({"via": access.via if access else None, "label": access.key if access else None,
                         "login_required": guard.console.configured}, headers=NO_STORE)


async def login(request: Request) -> Response:
    guard = request.app.state.guard
    body = await _body(request, LoginRequest)
    if isinstance(body, Response):
        return body
    if not guard.console.configured:  # loopback-only console: nothing to log in with, nothing needed
        return JSONResponse({"ok": True, "via": "loopback"}, headers=NO_STORE)
    access = access_of(request)
    result = await guard.console_login(body.token.strip(), access.client if access else "")
    if isinstance(result, Refusal):
        log.info("console login refused from %s: %s", access.client if access else "?", result.code)
        return refusal_response(result)
    log.info("console login (%s) from %s", "console token" if result == CONSOLE_LABEL else result,
             access.client if access else "?")
    response = JSONResponse({"ok": True, "via": "session", "label": result}, headers=NO_STORE)
    guard.console.set_cookie(response, guard.console.issue(result, guard.clock()),
                             secure=request.url.scheme == "https")
    return response


async def logout(request: Request) -> Response:
    response = JSONResponse({"ok": True}, headers=NO_STORE)
    request.app.state.guard.console.clear_cookie(response, secure=request.url.scheme == "https")
    return response


# --- calls --------------------------------------------------------------------------------------------------------
async def calls(request: Request) -> JSONResponse:
    console = _console(request)
    snapshot = console.hub.snapshot(console.clock())
    known = {c["id"] for c in snapshot["past"]} | {c["id"] for c in snapshot["live"]}
    recorded = await asyncio.to_thread(list_recordings, request.app.state.settings.recordings_dir)
    snapshot["recordings"] = [r for r in recorded if r["id"] not in known]
    return JSONResponse(snapshot, headers=NO_STORE)


async def elsewhere(request: Request) -> JSONResponse:
    """Calls the other workers and instances sharing Redis run now (``shared`` False: there are none)."""
    runtime = request.app.state.runtime
    return JSONResponse({"shared": runtime.state.shared, "instance": runtime.state.instance,
                         "calls": await calls_elsewhere(runtime)}, headers=NO_STORE)


async def call_detail(request: Request) -> JSONResponse:
    console = _console(request)
    call_id = request.path_params["call_id"]
    directory = request.app.state.settings.recordings_dir
    call = console.hub.find(call_id)
    path = await asyncio.to_thread(find_recording, directory, call_id)
    if call is not None:
        return JSONResponse({**call.detail(console.clock()), "recording": path is not None,
                             "listenable": console.listenable(call_id)}, headers=NO_STORE)
    if path is not None and (detail := await asyncio.to_thread(recording_detail, path)) is not None:
        return JSONResponse({**detail, "recording": True}, headers=NO_STORE)
    return _error(404, "not_found", "no such call (the console keeps the last calls, and recordings on disk)")


async def recorded_call(request: Request) -> JSONResponse:
    path = await asyncio.to_thread(find_recording, request.app.state.settings.recordings_dir,
                                   request.path_params["call_id"])
    detail = await asyncio.to_thread(recording_detail, path) if path is not None else None
    if detail is None:
        return _error(404, "not_found", "no recording of that call")
    return JSONResponse({**detail, "recording": True}, headers=NO_STORE)


def _frame(event: dict[str, Any]) -> str:
    return "data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n\n"


async def events(request: Request) -> Response:
    console = _console(request)

    async def stream() -> Any:
        watcher = console.watch()
        try:
            yield "retry: 2000\n\n" + _frame({"type": "snapshot", **console.hub.snapshot(console.clock())})
            while True:
                try:
                    await asyncio.wait_for(watcher.wake.wait(), KEEPALIVE)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield ": keep-alive\n\n"
                    continue
                watcher.wake.clear()
                if watcher.subscription.dropped:
                    yield _frame({"type": "dropped"})
                    return
                batch = watcher.subscription.take()
                if batch:
                    yield "".join(_frame(e) for e in batch)
        finally:
            console.unwatch(watcher)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={**NO_STORE, "X-Accel-Buffering": "no"})


async def hang_up(request: Request) -> JSONResponse:
    call_id = request.path_params["call_id"]
    try:
        _console(request).hang_up(call_id)
    except ActionError as exc:
        if exc.status != 404:
            return _error(exc.status, exc.code, exc.message)
        try:  # not here: maybe a phone call another instance runs
            await hang_up_elsewhere(request.app.state.runtime, call_id)
        except ActionError as other:
            return _error(other.status, other.code, other.message)
    return JSONResponse({"ok": True, "status": "hanging up"}, status_code=202)


async def transfer(request: Request) -> JSONResponse:
    body = await _body(request, TransferRequest)
    if isinstance(body, Response):
        return body  # type: ignore[return-value]
    try:
        target = e164(body.target)
    except ValueError as exc:
        return _error(422, "invalid_number", str(exc))
    try:
        await _console(request).transfer(request.path_params["call_id"], target)
    except ActionError as exc:
        return _error(exc.status, exc.code, exc.message)
    return JSONResponse({"ok": True, "status": "transferred"})


async def listen(ws: WebSocket) -> None:
    """Listen in: binary messages of 24 kHz PCM16 mono (20 ms each), the caller and the agent mixed, while the call
    is live and recorded with consent. Refused (before any audio) with close code 4403 or 4404 and the reason."""
    console: Console = ws.app.state.runtime.console
    await ws.accept()
    try:
        tap, listener = console.listen(ws.path_params["call_id"])
    except ActionError as exc:
        await ws.close(code=4000 + exc.status, reason=exc.message[:120])
        return

    async def drain_client() -> None:  # the page sends nothing; its close ends the listening
        try:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass
        except (WebSocketDisconnect, RuntimeError):
            pass

    reader = asyncio.create_task(drain_client(), name="console-listen-reader")
    try:
        while not reader.done():
            getter = asyncio.ensure_future(listener.queue.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            frame = getter.result()
            if frame is None:  # the call ended, or consent was withdrawn
                await ws.close(code=1000, reason="the call ended or is no longer recorded")
                break
            await ws.send_bytes(frame)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        tap.leave(listener)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def _phone_routes() -> list[BaseRoute]:
    """The softphone's routes (``/console/phone``), when that module is part of this build."""
    try:
        from . import phone
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.phone":
            raise
        return []
    return list(phone.routes)


routes: list[BaseRoute] = [
    Route("/console", page, methods=["GET"]),
    *_phone_routes(),
    Mount("/console/static", app=StaticFiles(directory=STATIC), name="console-static"),
    Route("/console/login", login, methods=["POST"]),
    Route("/console/logout", logout, methods=["POST"]),
    Route("/console/api/session", session_info, methods=["GET"]),
    Route("/console/api/calls", calls, methods=["GET"]),
    Route("/console/api/elsewhere", elsewhere, methods=["GET"]),
    Route("/console/api/calls/{call_id}", call_detail, methods=["GET"]),
    Route("/console/api/calls/{call_id}/recording", recorded_call, methods=["GET"]),
    Route("/console/api/calls/{call_id}/hangup", hang_up, methods=["POST"]),
    Route("/console/api/calls/{call_id}/transfer", transfer, methods=["POST"]),
    Route("/console/api/events", events, methods=["GET"]),
    WebSocketRoute("/console/api/calls/{call_id}/listen", listen),
]
