"""Shared fixtures: a real telebridge server (uvicorn on a loopback port) running in its own thread."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

AUTH_TOKEN = "test-auth-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving ``create_app`` on 127.0.0.1 in a background thread with its own event loop."""

    def __init__(self, *, bind: str = "127.0.0.1", **settings_overrides) -> None:
        """``bind``: the interface to listen on (``0.0.0.0`` lets a test connect from a non-loopback address)."""
        import uvicorn

        from telebridge.app import create_app
        from telebridge.security import uvicorn_proxy_options
        from telebridge.settings import Settings

        self.port = free_port()
        # Cloned voices go to a throwaway directory, never the user's data directory.
        settings_overrides.setdefault("voice_store_dir", Path(tempfile.mkdtemp(prefix="telebridge-voices-")))
        self.settings = Settings(_env_file=None, host="127.0.0.1", port=self.port,
                                 twilio_auth_token=AUTH_TOKEN, **settings_overrides)
        self.app = create_app(self.settings)
        config = uvicorn.Config(self.app, host=bind, port=self.port, log_config=None, ws="websockets-sansio",
                                ws_ping_interval=None, lifespan="on", **uvicorn_proxy_options(self.settings))
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"telebridge-{self.port}")

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def runtime(self):
        return self.app.state.runtime

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("telebridge test server did not start")
            time.sleep(0.05)
        return self

    def call_tasks(self) -> list[asyncio.Task]:
        """Tasks on the server loop that belong to a call (named '<call id>:...')."""
        assert self.loop is not None
        return [t for t in asyncio.all_tasks(self.loop) if ":" in t.get_name() and not t.done()]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


async def finished_call(server, call_sid: str, timeout: float = 15.0):
    """The server-side record of a call (it lands a moment after the simulator hangs up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for call in list(server.runtime.finished):
            if call.call_id == call_sid:
                return call
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {call_sid} not found among finished calls")


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """CLI commands run in-process (``main([...])``) configure logging; later tests get the root logger back."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.fixture(scope="session")
def server() -> Iterator[LiveServer]:
    """The embedded default stack with the built-in demo agent."""
    srv = LiveServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def auth_token() -> str:
    return AUTH_TOKEN


@pytest.fixture()
def deepgram_not_in_build(monkeypatch):
    """Make ``STT.Deepgram`` a provider this build has no client for (its module cannot be imported)."""
    from telebridge.providers import registry

    monkeypatch.setitem(registry.STT_MODULES, "deepgram", "telebridge.providers.stt._not_in_this_build")
    monkeypatch.setattr("telebridge.config.IMPLEMENTED_STT", {"whisper"})
