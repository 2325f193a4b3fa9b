"""The browser softphone: ``/console/phone`` and the three things its page needs from the server.

* ``GET /console/phone`` -- the page (``static/phone/``: plain ES modules and two AudioWorklets, no build step).
  It talks to the served agent over ``/v1/realtime`` like any realtime client: PCM16 at 24 kHz both ways,
  ``session.update`` with the voice, ``{character, scenario}`` and ``allow_recording``.
* ``POST /console/phone/session`` -- what the page needs to open ``/v1/realtime``: ``{"token": …}``, a realtime
  session token (short-lived, single use, exactly what ``POST /v1/realtime/sessions`` gives a key holder), sent
  as the ``telebridge-token.<t>`` subprotocol; or ``{"token": null}`` when the socket will admit this browser
  as it is (no API key configured and a loopback client).
* ``GET`` / ``POST /console/phone/voices`` -- ``GET`` / ``POST /v1/voices`` (the voice list, cloning), for a
  browser that holds only the console's login: ``/v1/`` paths never take the console cookie.

Access is the console's (:mod:`telebridge.security.policy`, ``console``): the page itself holds no data and is
served to anyone once a console token or API key is configured; everything else needs the console token or an
API key as a bearer credential, or the console's login cookie (``POST /console/login``), which the page asks
for when it gets a 401. With neither configured, loopback clients only. A page never holds an API key.
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..security.guard import Access, Guard, Refusal
from ..security.http import access_of
from ..security.middleware import refusal_response
from ..security.policy import REALTIME
from ..security.tokens import StoreFull
from ..voices.http import create_voice, list_voices

log = logging.getLogger("telebridge.console.phone")

PAGE = Path(__file__).parent / "static" / "phone" / "phone.html"
CONSOLE_LABEL = "console"  # whose token it is (for per-key session limits) when no key's label is known
NO_STORE = {"Cache-Control": "no-store"}


def _page_headers(request: Request) -> dict[str, str]:
    ws_origin = ("wss://" if request.url.scheme == "https" else "ws://") + request.url.netloc
    policy = "; ".join([
        "default-src 'self'",
        "script-src 'self'",  # the page's modules and the AudioWorklets it loads
        f"connect-src 'self' {ws_origin}",
        "img-src 'self' data:",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])
    return {**NO_STORE, "Content-Security-Policy": policy, "Permissions-Policy": "microphone=(self)",
            "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}


def _admitted(request: Request) -> tuple[Guard, Access] | Response:
    """The guard and who the access middleware let in, or the refusal (fail closed if it did not run)."""
    guard = getattr(request.app.state, "guard", None)
    access = access_of(request)
    if guard is None or access is None:
        return refusal_response(Refusal(401, "unauthorized", "not authorized"))
    return guard, access


async def phone_page(request: Request) -> Response:
    return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers=_page_headers(request))


async def phone_session(request: Request) -> Response:
    admitted = _admitted(request)
    if isinstance(admitted, Response):
        return admitted
    guard, access = admitted
    if not guard.keys:
        # No key anywhere: /v1/realtime takes no tokens and answers loopback clients only. Ask the guard whether
        # it would admit this browser, so a remote operator hears why instead of a failed handshake.
        verdict = guard.check(REALTIME, request.headers, access.client)
        if isinstance(verdict, Refusal):
            return refusal_response(Refusal(
                403, "loopback_only", "the realtime API answers loopback clients only until an API key is set "
                "(TELEBRIDGE_API_KEYS); the console token alone does not open it"))
        return JSONResponse({"token": None, "expires_at": None}, headers=NO_STORE)
    label = access.key or CONSOLE_LABEL
    try:
        minted = guard.tokens.mint(label, guard.clock())
    except StoreFull as exc:
        return refusal_response(Refusal(429, "rate_limit_exceeded", f"{exc}; try again shortly", retry_after=5.0))
    share = getattr(guard, "share_token", None)  # with REDIS_URL: redeemable on whichever worker takes the socket
    if share is not None:
        await share(minted, label)
    log.info("softphone session token issued for %s (via %s, valid %g s, single use)", label, access.via,
             guard.tokens.ttl)
    return JSONResponse({"token": minted.value, "expires_at": minted.expires_at}, headers=NO_STORE)


async def phone_voices(request: Request) -> Response:
    return await list_voices(request)


async def phone_clone(request: Request) -> Response:
    """``POST /v1/voices`` for the console's user, counted against the same per-hour upload limits."""
    admitted = _admitted(request)
    if isinstance(admitted, Response):
        return admitted
    guard, access = admitted
    limited = await guard.admit_upload(access)
    if limited is not None:
        return refusal_response(limited)
    return await create_voice(request)


routes: list = [
    Route("/console/phone", phone_page, methods=["GET"]),
    Route("/console/phone/session", phone_session, methods=["POST"]),
    Route("/console/phone/voices", phone_voices, methods=["GET"]),
    Route("/console/phone/voices", phone_clone, methods=["POST"]),
]
