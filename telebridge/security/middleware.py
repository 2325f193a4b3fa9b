"""Pure-ASGI middleware: every HTTP request and WebSocket handshake passes the :class:`~.guard.Guard` first.

- Refusals happen before the route runs: HTTP gets a JSON error (401/403/404/413/429); a WebSocket is refused
  at the handshake — an HTTP 401/403 denial response with the same JSON body where the server supports the ASGI
  denial extension (uvicorn does), else close 1008 before accept (clients see HTTP 403). Nothing is accepted,
  so no audio is ever read from a refused client.
- Session tokens (subprotocol ``telebridge-token.<t>`` or query ``?token=<t>``) are taken out of the scope before
  anything else sees it; secret-looking query parameters are dropped on every non-Twilio path.
- HTTP bodies are capped (``TELEBRIDGE_MAX_REQUEST_BODY_KB``; ``POST /v1/voices`` keeps its own larger cap):
  read here up to the cap, then replayed to the route.
- ``/twilio/*`` passes untouched apart from the body cap: its routes check Twilio's signatures themselves.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from .guard import ACCESS_SCOPE_KEY, Guard, Refusal
from .policy import bearer, policy_for, scrub_query, take_ws_token

log = logging.getLogger("telebridge.security")


def refusal_response(refusal: Refusal) -> JSONResponse:
    headers = {}
    if refusal.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if refusal.retry_after is not None:
        headers["Retry-After"] = str(int(refusal.retry_after) + 1)
    body = {"detail": refusal.message, "error": {"code": refusal.code, "message": refusal.message}}
    return JSONResponse(body, status_code=refusal.status, headers=headers)


class AccessMiddleware:
    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        policy = policy_for(scope["path"], scope.get("method", "GET") if kind == "http" else "WEBSOCKET")
        token: str | None = None
        if policy.kind != "twilio":  # Twilio signs the URL as sent: leave it exactly as it came
            token = take_ws_token(scope) if kind == "websocket" else None
            if kind == "http":
                scrub_query(scope)
        client = (scope.get("client") or ("", 0))[0] or ""
        headers = Headers(scope=scope)
        if policy.tokens and self.guard.shared_tokens is not None:  # minted on another worker or instance?
            await self.guard.sync_token(token or bearer(headers))
        result = self.guard.check(policy, headers, client, token)
        if isinstance(result, Refusal):
            await self._refuse(scope, receive, send, result, client)
            return
        if policy.upload:
            limited = await self.guard.admit_upload(result)
            if limited is not None:
                await self._refuse(scope, receive, send, limited, client)
                return
        scope[ACCESS_SCOPE_KEY] = result
        if kind == "http" and not policy.upload:
            replay = await self._read_capped(scope, receive)
            if replay is None:
                message = f"the request body is over the {self.guard.body_limit // 1024} KB limit " \
                          "(TELEBRIDGE_MAX_REQUEST_BODY_KB)"
                await self._refuse(scope, receive, send, Refusal(413, "body_too_large", message), client)
                return
            receive = replay
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, refusal: Refusal, client: str) -> None:
        log.info("refused %s %s from %s: %s (%d)", "WebSocket" if scope["type"] == "websocket" else
                 scope.get("method", ""), scope["path"], client or "?", refusal.code, refusal.status)
        response = refusal_response(refusal)
        if scope["type"] == "http":
            await response(scope, receive, send)
            return
        ws = WebSocket(scope, receive, send)
        if "websocket.http.response" in scope.get("extensions", {}):
            await ws.send_denial_response(response)
        else:
            await ws.close(code=1008, reason=refusal.code)

    async def _read_capped(self, scope: Scope, receive: Receive) -> Receive | None:
        """Read the body up to the cap; a receive that replays it, or None when it is too big."""
        limit = self.guard.body_limit
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            return None
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                return None
            if not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        pending: list[Any] = [{"type": "http.request", "body": body, "more_body": False}]
        pending += [m for m in messages if m["type"] != "http.request"]

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        return replay
