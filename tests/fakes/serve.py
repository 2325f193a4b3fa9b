"""Run a fake provider's ASGI app under uvicorn on a free loopback port, for the duration of a test.

    async with serve_app(fake.app) as origin:      # "http://127.0.0.1:PORT"
        ...

The server runs in the caller's event loop. Fakes that a module-scoped fixture shares use :class:`ThreadedApp`
(its own thread and loop, like the telebridge test server).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

__all__ = ["serve_app", "ThreadedApp"]


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _config(app: Any, ws: Any = "websockets-sansio") -> uvicorn.Config:
    return uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1,
                          ws=ws, ws_ping_interval=None)


@asynccontextmanager
async def serve_app(app: Any, *, ws: Any = "websockets-sansio",
                    servers: list[uvicorn.Server] | None = None) -> AsyncIterator[str]:
    """``ws``: uvicorn's WebSocket protocol; ``servers``: a list the running server is appended to."""
    sock = _bound_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, ws))
    if servers is not None:
        servers.append(server)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"fake-{port}")
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("fake server stopped during startup")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class ThreadedApp:
    """``app`` served from its own thread and event loop; ``origin`` once :meth:`start` returns."""

    def __init__(self, app: Any) -> None:
        self.sock = _bound_socket()
        self.origin = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(_config(app))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"fake-{self.origin}")

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))

    def start(self) -> ThreadedApp:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
