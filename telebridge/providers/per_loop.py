"""An engine's HTTP client, made lazily inside the running event loop.

Engines are created before the service's loop runs (and tests run several loops), while an ``httpx.AsyncClient``
-- or an SDK client wrapping one -- is bound to the loop it was first used in. So the client is made on first
use, and a use from another loop gets a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._client: T | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> T:
        """The running loop's client (made now if there is none yet)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = self._make()
            self._loop = loop
        return self._client

    def take(self) -> T | None:
        """Forget the client; returned for closing when it belongs to the running loop."""
        client, self._client = self._client, None
        return client if client is not None and self._loop is asyncio.get_running_loop() else None
