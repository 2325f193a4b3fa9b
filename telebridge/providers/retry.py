"""Bounded retries with jittered exponential backoff for provider requests.

Only failures a provider marks ``retryable`` (timeouts, dropped connections, 429, 5xx) are retried; a bad key
or a bad request fails at once. A request that has already delivered audio or words to the caller must not be
retried blindly (the caller would hear it twice): callers wrap only the part before the first byte.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from telebridge.providers.errors import ProviderError

__all__ = ["RetryPolicy", "with_retries"]

log = logging.getLogger("telebridge.providers")
T = TypeVar("T")


class RetryPolicy:
    def __init__(self, attempts: int = 3, base_delay: float = 0.1, max_delay: float = 1.0) -> None:
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**attempt)]."""
        cap = min(self.max_delay, self.base_delay * (2**attempt))
        return (rng or random).uniform(0.0, cap)


DEFAULT_POLICY = RetryPolicy()


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ProviderError):
        return exc.retryable
    return isinstance(exc, (asyncio.TimeoutError, ConnectionError, OSError))


async def with_retries(
    attempt: Callable[[], Awaitable[T]], *, provider: str, policy: RetryPolicy = DEFAULT_POLICY,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run ``attempt()`` until it succeeds, fails for good, or ``policy.attempts`` are used up."""
    for n in range(policy.attempts):
        try:
            return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if n + 1 >= policy.attempts or not _is_retryable(exc):
                if isinstance(exc, ProviderError):
                    raise
                raise ProviderError(provider, f"{type(exc).__name__}: {exc}", retryable=True) from exc
            if on_retry is not None:
                on_retry(exc)
            wait = policy.delay(n)
            # A ProviderError's message already starts with the provider's name.
            detail = str(exc) if isinstance(exc, ProviderError) else f"{provider}: {exc}"
            log.warning("%s; retrying in %.0f ms (%d/%d)", detail, 1000 * wait, n + 1, policy.attempts - 1)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")
