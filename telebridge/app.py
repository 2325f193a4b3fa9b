"""The Starlette application: routes only. Everything else lives in the modules it names."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.middleware import Middleware
from starlette.routing import Route, WebSocketRoute

from . import tracing
from .agent import Agent
from .console.routes import routes as console_routes
from .health import health_endpoint
from .metrics import metrics_endpoint
from .outbound.api import create_call, get_call, list_calls
from .outbound.calls import AMD_STATUS_PATH, CALL_STATUS_PATH, OUTBOUND_TWIML_PATH
from .outbound.webhooks import amd_status, call_status, outbound_twiml
from .realtime.handler import PATH as REALTIME_PATH
from .realtime.handler import realtime_endpoint
from .runtime import Runtime
from .security import AccessMiddleware, Guard, create_realtime_session
from .settings import Settings
from .state.http import list_recordings
from .twilio.media import media_stream
from .twilio.transfer import WHISPER_PATH, transfer_whisper
from .twilio.webhook import MEDIA_PATH, STATUS_PATH, STREAM_ENDED_PATH, stream_ended, stream_status, voice_webhook
from .voices.http import create_voice, list_voices


async def health(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    body = {"ok": not runtime.draining, "calls": len(runtime.calls), "accepting": runtime.accepting,
            "pid": os.getpid(), "instance": runtime.state.instance}  # which worker answered
    return JSONResponse(body, status_code=503 if runtime.draining else 200)


def create_app(settings: Settings | None = None, *, agent: Agent | None = None, warmup: bool = True) -> Starlette:
    settings = settings or Settings()
    settings.signatures_enforced  # noqa: B018 - fail fast on an inconsistent configuration

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.log_security_posture()
        tracing.configure(settings.otel_traces)
        runtime = Runtime(settings, agent)
        app.state.runtime = runtime
        guard.shared_tokens = runtime.state.tokens  # session tokens redeemable on any worker (REDIS_URL)
        guard.share_limits(runtime.state.link)  # sessions and uploads counted across workers (REDIS_URL)
        await runtime.start(warmup=warmup)
        try:
            yield
        finally:
            await runtime.stop()
            tracing.shutdown()

    guard = Guard(settings)
    app = Starlette(
        routes=[
            Route("/twilio/voice", voice_webhook, methods=["POST"]),
            Route(STATUS_PATH, stream_status, methods=["POST"]),
            Route(STREAM_ENDED_PATH, stream_ended, methods=["POST"]),
            WebSocketRoute(MEDIA_PATH, media_stream),
            Route(WHISPER_PATH, transfer_whisper, methods=["POST"]),  # said to whoever takes a transfer
            # Outbound calls: Twilio's TwiML request once answered, its status and AMD callbacks; the calls API.
            Route(OUTBOUND_TWIML_PATH, outbound_twiml, methods=["POST"]),
            Route(CALL_STATUS_PATH, call_status, methods=["POST"]),
            Route(AMD_STATUS_PATH, amd_status, methods=["POST"]),
            Route("/v1/calls", create_call, methods=["POST"]),
            Route("/v1/calls", list_calls, methods=["GET"]),  # every instance's calls with REDIS_URL
            Route("/v1/calls/{sid}", get_call, methods=["GET"]),
            Route("/v1/recordings", list_recordings, methods=["GET"]),  # the recordings index
            Route("/healthz", health),
            Route("/metrics", metrics_endpoint, methods=["GET"]),  # Prometheus; behind the access middleware
            # Unmute's session API (the seed): health, voices and cloning, the realtime WebSocket.
            Route("/v1/health", health_endpoint, methods=["GET"]),
            Route("/v1/voices", list_voices, methods=["GET"]),
            Route("/v1/voices", create_voice, methods=["POST"]),
            WebSocketRoute(REALTIME_PATH, realtime_endpoint),
            Route(REALTIME_PATH + "/sessions", create_realtime_session, methods=["POST"]),  # session tokens
            *console_routes,  # /console (its static files, the softphone /console/phone): README "Console"
        ],
        middleware=[Middleware(AccessMiddleware, guard=guard)],  # keys, tokens, origins, limits: README Security
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.guard = guard
    return app
