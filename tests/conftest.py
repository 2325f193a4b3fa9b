"""Shared fixtures: a real telebridge server (uvicorn on a loopback port) running in its own thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

AUTH_TOKEN = "test-auth-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving ``create_app`` on 127.0.0.1 in a background thread with its own event loop.

    Whisper, Piper and Silero are loaded once per process and shared by every server (as by every call of one
    server), so only the process's first server runs the start-up warm-up; later ones skip it (their engines
    are made on their first call, from the already loaded and warmed models).
    """

    warmed = False  # a server of this process has run the start-up warm-up

    def __init__(self, *, bind: str = "127.0.0.1", warmup: bool | None = None, ws: str | None = None,
                 **settings_overrides) -> None:
        """``bind``: the interface to listen on (``0.0.0.0`` lets a test connect from a non-loopback address).
        ``warmup``: run the start-up warm-up (default: only if no server of this process has yet). ``ws``: uvicorn's
        WebSocket protocol (default: the server's own, :mod:`telebridge.websocket`; ``"websockets-sansio"``:
        uvicorn's, without the ``telebridge.direct`` extension)."""
        import uvicorn

        from telebridge.app import create_app
        from telebridge.security import uvicorn_proxy_options
        from telebridge.settings import Settings
        from telebridge.websocket import websocket_protocol

        # The listening socket is bound here and handed to uvicorn: no other process (a parallel test worker)
        # can take the port between choosing it and listening on it.
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((bind, 0))
        self.port = self.socket.getsockname()[1]
        # Cloned voices go to a throwaway directory, never the user's data directory.
        settings_overrides.setdefault("voice_store_dir", Path(tempfile.mkdtemp(prefix="telebridge-voices-")))
        self.settings = Settings(_env_file=None, host="127.0.0.1", port=self.port,
                                 twilio_auth_token=AUTH_TOKEN, **settings_overrides)
        self.warmup = not LiveServer.warmed if warmup is None else warmup
        self.app = create_app(self.settings, warmup=self.warmup)
        config = uvicorn.Config(self.app, host=bind, port=self.port, log_config=None, ws=ws or websocket_protocol(),
                                ws_ping_interval=None, lifespan="on", **uvicorn_proxy_options(self.settings))
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"telebridge-{self.port}")

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve(sockets=[self.socket]))

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
        if self.warmup:
            LiveServer.warmed = True
        return self

    def call_tasks(self) -> list[asyncio.Task]:
        """Tasks on the server loop that belong to a call (named '<call id>:...')."""
        assert self.loop is not None
        return [t for t in asyncio.all_tasks(self.loop) if ":" in t.get_name() and not t.done()]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


class Background:
    """A thread with its own event loop, on which a module's calls run side by side while its tests go on.

    A module-scoped fixture starts every call it needs with :meth:`start` (a concurrent future); each test then
    awaits its own call with :meth:`result` and asserts on it, so the module takes as long as its longest call
    instead of the sum of them. Only for calls that do not disturb each other (distinct call SIDs, no shared knob).
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="test-background-calls")
        self.thread.start()

    def start(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @staticmethod
    async def result(future, timeout: float = 120.0):
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@contextlib.contextmanager
def voice_store(tmp_path_factory) -> Iterator[Path]:
    """A module's own voice store (its clones are its own: which modules ran before on this worker never shows),
    seeded with the Piper base profiles an earlier module measured (measuring them takes seconds), and handing
    them on to the next module."""
    from telebridge.voices.cloning import PROFILE_CACHE

    store = tmp_path_factory.mktemp("voice_store")
    shared = tmp_path_factory.getbasetemp() / PROFILE_CACHE
    if shared.is_file():
        shutil.copy(shared, store / PROFILE_CACHE)
    yield store
    if (store / PROFILE_CACHE).is_file():
        shutil.copy(store / PROFILE_CACHE, shared)


async def finished_call(server, call_sid: str, timeout: float = 15.0):
    """The server-side record of a call (it lands a moment after the simulator hangs up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for call in list(server.runtime.finished):
            if call.call_id == call_sid:
                return call
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {call_sid} not found among finished calls")


async def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the ``telebridge serve`` subprocess ``proc`` (stdout piped) answers ``/healthz`` with 200; fails with
    the tail of its output if it exits first."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")[-3000:]
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("server did not become healthy")


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    """A "speech" inference pool (2 threads) for tests that run Whisper or Piper directly, one per module."""
    from telebridge.inference import InferencePool

    p = InferencePool("speech", 2, 16)
    yield p
    p.shutdown()


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
def quick_server() -> Iterator[LiveServer]:
    """The embedded default stack with the short-spoken test agent (tests/agents/voice_agent.py): a one-line
    greeting and one-sentence answers, for tests whose point is not what the demo agent says."""
    srv = LiveServer(agent=str(Path(__file__).parent / "agents" / "voice_agent.py")).start()
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


# --- running the suite on two worker processes (pytest-xdist, ``make test``) ------------------------------------
# Most of the suite's wall time is real-time audio (a simulated call lasts as long as its speech), so two worker
# processes (``-n 2 --dist loadfile``: each module stays on one worker, its module-scoped server shared) overlap
# one module's listening with another's. Modules that load the machine on purpose -- many calls at once, with
# turn-taking judged on timing -- run ALONE: first, each with no other module running beside it, as in a serial
# run.
ALONE = ("tests/test_scenarios", "tests/test_call_e2e.py")


def _alone(scope: str) -> bool:
    return scope.startswith(ALONE)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class AloneFirst(LoadFileScheduling):
        """``loadfile``, except that the ALONE modules run first, one after the other on one worker, while the
        other workers wait (a worker holds its last test until it gets more work or is told to stop, so the
        worker running an ALONE module is the one given the next module)."""

        def _alone_holder(self):
            for node, work in self.assigned_work.items():
                if any(_alone(scope) and self._pending_of({scope: unit}) for scope, unit in work.items()):
                    return node
            return None

        def _assign_work_unit(self, node) -> None:
            holder = self._alone_holder()
            if holder is not None and holder is not node:
                return  # everything else waits for the ALONE module
            alone = next((scope for scope in self.workqueue if _alone(scope)), None)
            if alone is not None:
                self.workqueue.move_to_end(alone, last=False)
            super()._assign_work_unit(node)

        def mark_test_complete(self, node, item_index, duration=0) -> None:
            super().mark_test_complete(node, item_index, duration)
            for other in self.nodes:  # a worker left idle while an ALONE module ran gets work again
                if other is not node:
                    self._reschedule(other)

    return AloneFirst(config, log)
