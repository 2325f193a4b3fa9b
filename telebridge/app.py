"""The Starlette application: routes only. Everything else lives in the modules it names."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from .agent import Agent
from .runtime import Runtime
from .settings import Settings
from .twilio.media import media_stream
from .twilio.webhook import MEDIA_PATH, STATUS_PATH, stream_status, voice_webhook


async def health(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    body = {"ok": not runtime.draining, "calls": len(runtime.calls), "accepting": runtime.accepting}
    return JSONResponse(body, status_code=503 if runtime.draining else 200)


def create_app(settings: Settings | None = None, *, agent: Agent | None = None, warmup: bool = True) -> Starlette:
    settings = settings or Settings()
    settings.signatures_enforced  # noqa: B018 - fail fast on an inconsistent configuration

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.log_security_posture()
        runtime = Runtime(settings, agent)
        app.state.runtime = runtime
        await runtime.start(warmup=warmup)
        try:
            yield
        finally:
            await runtime.stop()

    app = Starlette(
        routes=[
            Route("/twilio/voice", voice_webhook, methods=["POST"]),
            Route(STATUS_PATH, stream_status, methods=["POST"]),
            WebSocketRoute(MEDIA_PATH, media_stream),
            Route("/healthz", health),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
