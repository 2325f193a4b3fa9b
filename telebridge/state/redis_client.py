"""One process's link to Redis: the connection pool, whether Redis is reachable, and the event channel.

Redis is never on a call's critical path. Every operation goes through :meth:`RedisLink.run`, which gives up
quickly (``op_timeout``) and returns a fallback instead of raising: the stores built on it keep a local copy and
carry on in-process. While Redis is down no operation is even tried (the link is *down*); a monitor task pings it
every ``ping_interval`` seconds and, once it answers, marks the link *up* and runs the reconnect hooks (stores push
what changed meanwhile, the voice cache is refreshed). ``GET /v1/health`` shows :meth:`RedisLink.report`.

Events (a voice was cloned, an AMD verdict for a call another instance runs) are published as JSON on one pub/sub
channel; every instance's listener task hands them to the handlers registered for their ``type``. Pub/sub is
fire-and-forget: whatever must not be lost is also written to a key (the voice itself, the call record), and
events only say "look now".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("telebridge.state.redis")

T = TypeVar("T")
EventHandler = Callable[[dict[str, Any]], Awaitable[None]]

# Errors that mean "Redis is not answering": connection refused or reset, timeouts, a server shutting down.
try:  # redis is a core dependency; the guard keeps `telebridge --help` working in a broken environment
    from redis.exceptions import RedisError as _RedisError
except ImportError:  # pragma: no cover
    _RedisError = ConnectionError  # type: ignore[misc,assignment]
UNREACHABLE: tuple[type[BaseException], ...] = (_RedisError, OSError, asyncio.TimeoutError)


def masked_url(url: str) -> str:
    """``redis://user:***@host:6379/0``: the URL without its password, for logs and ``/v1/health``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}{port}", parts.path, parts.query, parts.fragment))


class RedisLink:
    def __init__(self, url: str, *, prefix: str = "telebridge", instance: str = "", op_timeout: float = 0.5,
                 ping_interval: float = 1.0) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        self.prefix = prefix
        self.instance = instance
        self.ping_interval = ping_interval
        # One quick retry: the first command after Redis restarted finds a dead pooled connection.
        self.client = Redis.from_url(url, socket_timeout=op_timeout, socket_connect_timeout=op_timeout,
                                     retry=Retry(NoBackoff(), 1), health_check_interval=0)
        self.up = False
        self.checked = False  # whether the link has been tried at all
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.reconnects = 0
        self._handlers: dict[str, list[EventHandler]] = {}
        self._on_up: list[Callable[[], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._monitor: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    # --- keys ---------------------------------------------------------------------------------------------------
    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def channel(self) -> str:
        return self.key("events")

    # --- lifecycle ----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (a Redis that is down now is logged, not fatal: the process runs in-process until it is back)."""
        await self._ping()
        if not self.up:
            log.warning("Redis at %s is not reachable (%s): running with in-process state until it is",
                        masked_url(self.url), self.last_error)
        loop = asyncio.get_running_loop()
        self._monitor = loop.create_task(self._monitor_loop(), name="redis-monitor")
        self._listener = loop.create_task(self._listen_loop(), name="redis-events")
        if self.up:
            try:  # events published from now on reach this instance
                await asyncio.wait_for(self._listening.wait(), 2.0)
            except asyncio.TimeoutError:
                pass

    async def stop(self) -> None:
        for task in (self._monitor, self._listener, *self._tasks):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._monitor, self._listener, *self._tasks) if t is not None),
                             return_exceptions=True)
        self._tasks.clear()
        try:
            await self.client.aclose()
        except Exception:  # noqa: BLE001 - closing a pool whose server is gone
            pass

    # --- health -------------------------------------------------------------------------------------------------
    def mark_down(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        if self.up:
            log.error("Redis at %s went away (%s): calls continue; shared state is in-process until it is back",
                      masked_url(self.url), self.last_error)
        if self.up or self.down_since is None:
            self.down_since = time.time()
        self.up = False
        self.checked = True

    async def _mark_up(self) -> None:
        was_down = self.checked and not self.up
        self.up, self.checked, self.last_error, self.down_since = True, True, None, None
        if was_down:
            self.reconnects += 1
            log.warning("Redis at %s is back: syncing shared state", masked_url(self.url))
            for hook in list(self._on_up):
                try:
                    await hook()
                except UNREACHABLE as exc:
                    self.mark_down(exc)
                    return
                except Exception:
                    log.exception("a Redis reconnect hook failed")

    async def _ping(self) -> None:
        try:
            await self.client.ping()
        except UNREACHABLE as exc:
            self.mark_down(exc)
        else:
            await self._mark_up()

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            await self._ping()

    def on_reconnect(self, hook: Callable[[], Awaitable[None]]) -> None:
        """``hook()`` runs each time Redis answers again after being down (push local changes, refresh caches)."""
        self._on_up.append(hook)

    def report(self) -> dict[str, Any]:
        return {
            "configured": True,
            "up": self.up,
            "url": masked_url(self.url),
            "instance": self.instance,
            "detail": "connected" if self.up else (self.last_error or "not connected yet"),
            "down_since": self.down_since,
            "reconnects": self.reconnects,
        }

    # --- operations ---------------------------------------------------------------------------------------------
    async def run(self, op: Callable[[Any], Awaitable[T]], default: T) -> T:
        """``await op(client)``, or ``default`` when Redis is down or stops answering (the link is then down)."""
        if not self.up:
            return default
        try:
            return await op(self.client)
        except UNREACHABLE as exc:
            self.mark_down(exc)
            return default
        except Exception:  # a bug or bad data in shared state must never break the call that asked
            log.exception("a Redis operation failed; using this process's own state for it")
            return default

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run a write in the background (from synchronous code); tracked so :meth:`stop` ends it."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- events -------------------------------------------------------------------------------------------------
    def on_event(self, kind: str, handler: EventHandler) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    async def publish(self, kind: str, **payload: Any) -> bool:
        message = json.dumps({"type": kind, "from": self.instance, **payload}, separators=(",", ":"))

        async def op(r: Any) -> bool:
            await r.publish(self.channel, message)
            return True

        return await self.run(op, False)

    async def _listen_loop(self) -> None:
        while True:
            if not self.up:
                self._listening.clear()
                await asyncio.sleep(self.ping_interval / 2)
                continue
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._listening.set()
                while self.up:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._dispatch(message.get("data"))
            except UNREACHABLE as exc:
                self.mark_down(exc)
            finally:
                self._listening.clear()
                try:
                    await pubsub.aclose()
                except Exception:  # noqa: BLE001 - its connection is already gone
                    pass

    async def _dispatch(self, data: Any) -> None:
        try:
            event = json.loads(data)
        except (TypeError, ValueError):
            return
        if not isinstance(event, dict):
            return
        for handler in self._handlers.get(str(event.get("type")), ()):
            try:
                await handler(event)
            except UNREACHABLE as exc:
                self.mark_down(exc)
            except Exception:
                log.exception("handling a %s event failed", event.get("type"))
