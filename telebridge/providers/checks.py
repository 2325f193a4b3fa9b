"""The cached credential check every cloud client runs when a call starts.

A check is one cheap authenticated request (list models, read the account, mint a token). Its verdict is
remembered so calls do not each pay for it and a bad key is not hammered: a pass for ``OK_TTL`` seconds, a
refusal for ``FAIL_TTL`` (a 429, 5xx or timeout is retried once and then not remembered: it says nothing about
the key). Checks of one engine run one at a time, so calls starting together share one request.
What the request is, and what it reports to the health counters, is the client's ``probe``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from telebridge.providers.errors import ProviderError

__all__ = ["CheckCache", "OK_TTL", "FAIL_TTL"]

OK_TTL = 300.0  # seconds a passed check is trusted
FAIL_TTL = 30.0  # seconds a refused one is remembered
RETRIES = 1  # a check failing with a 429, 5xx or timeout is tried once more before the call falls back
RETRY_DELAY = 0.2


def _verdict(exc: ProviderError) -> bool:
    """A refusal (bad key, bad request) is a verdict on the credentials; a 429, 5xx or timeout is not."""
    return not exc.retryable


class CheckCache:
    """One engine's last check verdict. ``remember(exc)`` says whether a failure is a verdict on the credentials
    (Azure does not take a network blip for one); a failure not remembered leaves the cache as it was."""

    def __init__(self, *, remember: Callable[[ProviderError], bool] = _verdict) -> None:
        self._remember = remember
        self._until = 0.0
        self.last_error: ProviderError | None = None
        """The failure the last remembered check ended with (None: it passed, or none ran yet)."""
        self._lock = asyncio.Lock()

    async def run(self, probe: Callable[[], Awaitable[object]]) -> None:
        """The remembered verdict while it is fresh (a failure is raised again), else ``await probe()``."""
        async with self._lock:
            if time.monotonic() < self._until:
                if self.last_error is not None:
                    raise self.last_error
                return
            for attempt in range(RETRIES + 1):
                try:
                    await probe()
                    break
                except ProviderError as exc:
                    if exc.retryable and attempt < RETRIES:  # one blip must not send calls to the fallback
                        await asyncio.sleep(RETRY_DELAY)
                        continue
                    if self._remember(exc):
                        self.last_error, self._until = exc, time.monotonic() + FAIL_TTL
                    raise
            self.last_error, self._until = None, time.monotonic() + OK_TTL
