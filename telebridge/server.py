"""Running the app under uvicorn, with deploys that do not drop live calls.

uvicorn's own shutdown closes every WebSocket at once (code 1012): on a phone line that is a caller cut off
mid-sentence. On the first SIGTERM/SIGINT we instead stop taking calls (the webhook answers "lines are busy",
``/healthz`` reports ``accepting: false`` so a load balancer moves traffic away), let live calls finish for up
to ``drain_timeout`` seconds, then exit. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("telebridge.server")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain_timeout: float) -> None:
        super().__init__(config)
        self.drain_timeout = drain_timeout
        self._draining = False

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
