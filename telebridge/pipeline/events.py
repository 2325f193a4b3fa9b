"""Running the agent's event handlers without ever letting them hold up the call.

Handlers are the developer's code: they may be slow, may raise, may hang. Each one runs as its own task, its
failure is logged, and every task still running when the call ends is cancelled with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("telebridge.events")

class EventDispatcher:
    def __init__(self, agent: Any, session_data: dict, call_id: str) -> None:
        self._agent = agent
        self._session_data = session_data
        self._call_id = call_id
        self._tasks: set[asyncio.Task] = set()
        self.fired: list[str] = []  # names, in order; handy for tests and debugging

    def fire(self, name: str, payload: dict | None = None) -> None:
        self.fired.append(name)
        handler = getattr(self._agent, name, None)
        if handler is None:
            return
        data = {"session_data": self._session_data, "call_id": self._call_id, **(payload or {})}
        task = asyncio.get_running_loop().create_task(self._run(name, handler, data), name=f"{self._call_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, name: str, handler: Any, data: dict) -> None:
        try:
            await handler(data)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call %s: event handler %s raised (the call goes on)", self._call_id, name)

    async def aclose(self, grace: float = 1.0) -> None:
        """Give handlers a moment to finish (e.g. a final on_agent_stopped_speaking), then cancel the rest."""
        if not self._tasks:
            return
        done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
