"""Running the app under uvicorn, with deploys that do not drop live calls.

uvicorn's own shutdown closes every WebSocket at once (code 1012): on a phone line that is a caller cut off
mid-sentence. On the first SIGTERM/SIGINT we instead stop taking calls (the webhook answers "lines are busy",
``/healthz`` reports ``accepting: false`` so a load balancer moves traffic away), let live calls finish for up
to ``drain_timeout`` seconds, then exit. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from .websocket import websocket_protocol

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("telebridge.server")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain_timeout: float,
                 on_ready: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.drain_timeout = drain_timeout
        self._draining = False
        self._on_ready = on_ready  # told once the app has started and the socket is served (worker supervisor)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_ready is not None:
            self._on_ready()

    def _runtime(self) -> Any:
        app = self.config.loaded_app if self.config.loaded else self.config.app
        while app is not None and not hasattr(app, "state"):
            app = getattr(app, "app", None)  # unwrap uvicorn's middleware proxies
        return getattr(getattr(app, "state", None), "runtime", None)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        runtime = self._runtime()
        if self._draining or runtime is None or not runtime.calls or self.drain_timeout <= 0:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        runtime.draining = True
        log.warning("shutdown requested: refusing new calls, letting %d live call(s) finish (up to %.0f s)",
                    len(runtime.calls), self.drain_timeout)
        asyncio.get_event_loop().call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain(runtime)))

    async def _drain(self, runtime: Any) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while runtime.calls and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if runtime.calls:
            log.warning("drain timeout: %d call(s) still live; closing them", len(runtime.calls))
        self.should_exit = True


def has_sansio_ws() -> bool:
    try:
        import uvicorn.protocols.websockets.websockets_sansio_impl  # noqa: F401
    except ImportError:
        return False
    return True


def server_config(app: Any, settings: Settings) -> uvicorn.Config:
    from .security import uvicorn_proxy_options

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws=websocket_protocol(),  # uvicorn's sans-I/O protocol, tuned for media streams (telebridge.websocket)
        ws_ping_interval=None,  # Twilio does not answer pings reliably; a dead call ends with its stream
        timeout_graceful_shutdown=5,
        **uvicorn_proxy_options(settings),  # X-Forwarded-* believed only from TELEBRIDGE_TRUSTED_PROXIES
    )


def run_server(settings: Settings, *, app: Any = None, sockets: list[socket.socket] | None = None,
               on_ready: Callable[[], None] | None = None) -> bool:
    """Serve until stopped (one process, or one worker on the supervisor's ``sockets``); whether it started."""
    if app is None:
        from .app import create_app

        app = create_app(settings)
    server = DrainingServer(server_config(app, settings), settings.drain_timeout, on_ready=on_ready)
    try:
        server.run(sockets=sockets)
    except SystemExit as exc:  # uvicorn's startup failure (the app's lifespan failed: a bad agent, a model)
        if exc.code not in (0, None):
            return False
        raise
    return bool(server.started)
