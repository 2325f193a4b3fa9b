"""Route-side helpers: the key check routes rely on, and ``POST /v1/realtime/sessions`` (session tokens)."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from .guard import ACCESS_SCOPE_KEY, Access, Guard, Refusal
from .middleware import refusal_response

log = logging.getLogger("telebridge.security")


def access_of(request: Request) -> Access | None:
    """What the access middleware admitted this request as (None: it did not run)."""
    access = request.scope.get(ACCESS_SCOPE_KEY)
    return access if isinstance(access, Access) else None


def require_key(request: Request) -> JSONResponse | None:
    """For key-only routes: None when the request came with an API key, else the refusal to return.

    The middleware has already checked the key; this only makes such routes fail closed if it were ever missing.
    """
    access = access_of(request)
    if access is None or access.via != "key":
        return refusal_response(Refusal(404, "not_found", "Not Found"))
    return None


async def create_realtime_session(request: Request) -> JSONResponse:
    """Mint a short-lived, single-use token a browser uses to open ``/v1/realtime`` (OpenAI's ephemeral-key shape)."""
    denied = require_key(request)
    if denied is not None:
        return denied
    guard: Guard = request.app.state.guard
    access = access_of(request)
    assert access is not None
    minted = guard.mint(access)
    if isinstance(minted, Refusal):
        return refusal_response(minted)
    await guard.share_token(minted, str(access.key))  # with REDIS_URL: redeemable on any worker, once
    log.info("realtime session token issued for %s (valid %g s, single use)", access.key, guard.tokens.ttl)
    body = {"object": "realtime.session",
            "client_secret": {"value": minted.value, "expires_at": minted.expires_at}}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
