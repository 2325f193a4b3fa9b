"""The guard's limits shared on a real redis-server (telebridge/state/guard_limits.py): two guards — two workers or
instances — on one Redis count concurrent realtime sessions, uploads and failed console logins together; a killed
worker's sessions free their slots once their lease runs out; Redis away → each guard enforces the limits by
itself and sessions carry on; Redis back → the live sessions are counted again. Synthetic time throughout (the
guards' clock); the end-to-end view over HTTP/WebSocket is in test_shared_e2e.py."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from redis_server import RedisServer
from telebridge.security.guard import Access, Guard, Refusal
from telebridge.settings import Settings
from telebridge.state.redis_client import RedisLink


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def redis():
    server = RedisServer().start()
    yield server
    server.stop()


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def pair(url: str, clock: Clock, **limits) -> tuple[list[Guard], list[RedisLink]]:
    """Two guards with the same settings, each with its own link to Redis (a fresh key prefix per test)."""
    prefix = f"l{uuid.uuid4().hex[:8]}"
    settings = Settings(_env_file=None, api_keys="alpha,beta", **limits)
    links = [RedisLink(url, prefix=prefix, instance=name, ping_interval=0.1) for name in ("a", "b")]
    guards = []
    for link in links:
        guard = Guard(settings, clock=clock)
        guard.share_limits(link)
        await link.start()
        guards.append(guard)
    return guards, links


async def stop(links: list[RedisLink]) -> None:
    for link in links:
        await link.stop()


def admitted(result) -> bool:
    return not isinstance(result, Refusal)


async def test_two_guards_share_the_concurrent_session_limits(redis):
    clock = Clock()
    (a, b), links = await pair(redis.url, clock, max_realtime_sessions_per_key=2,
                               max_realtime_sessions_per_client=1)
    try:
        on_a = await a.admit_session(Access("key", "key1", "198.51.100.1"))
        on_b = await b.admit_session(Access("token", "key1", "198.51.100.2"))
        assert admitted(on_a) and admitted(on_b)
        for guard in (a, b):  # each holds one session of key1: the third is refused wherever it lands
            third = await guard.admit_session(Access("key", "key1", "198.51.100.3"))
            assert isinstance(third, Refusal) and third.status == 429 and "this API key" in third.message
        other_key = await b.admit_session(Access("key", "key2", "198.51.100.1"))  # address .1 is busy on A
        assert isinstance(other_key, Refusal) and "this client" in other_key.message
        on_a.release()  # the slot is free everywhere once the release reached Redis
        await until(lambda: _count(links[0], "sessions-per-key", "key:key1", 1))
        again = await b.admit_session(Access("key", "key1", "198.51.100.3"))
        assert admitted(again)
        assert admitted(await b.admit_session(Access("key", "key2", "198.51.100.1")))  # .1 is free too
        assert a.sessions_per_key.active("key:key1") == 0 and b.sessions_per_key.active("key:key1") == 2
    finally:
        await stop(links)


async def _count(link: RedisLink, name: str, subject: str, expected: int) -> bool:
    return await link.client.zcard(link.key("limit", name, subject)) == expected


async def test_two_guards_share_the_upload_and_login_windows_and_refusals_do_not_count(redis):
    clock = Clock()
    (a, b), links = await pair(redis.url, clock, max_uploads_per_hour_per_key=3,
                               max_uploads_per_hour_per_client=2, console_token="tok-123")
    try:
        x, y, w = ("key", "key1", "198.51.100.7"), ("key", "key1", "198.51.100.8"), ("key", "key1", "198.51.100.9")
        assert await a.admit_upload(Access(*x)) is None
        clock.t += 10
        assert await b.admit_upload(Access(*x)) is None
        clock.t += 10
        limited = await a.admit_upload(Access(*x))  # the address's two per hour, one on each instance
        assert limited.status == 429 and limited.retry_after == pytest.approx(3600 - 20)
        assert await b.admit_upload(Access(*y)) is None  # the refused attempt did not count against key1
        limited = await b.admit_upload(Access(*w))
        assert limited.status == 429 and limited.retry_after == pytest.approx(3600 - 20)  # key1's three
        clock.t += 3600 - 20  # the first upload slid out of the window
        assert await b.admit_upload(Access(*w)) is None

        for n in range(20):  # failed console logins from one address, split between the instances
            refused = await (a, b)[n % 2].console_login("guess", "203.0.113.5")
            assert isinstance(refused, Refusal) and refused.status == 401
        for guard in (a, b):
            limited = await guard.console_login("tok-123", "203.0.113.5")
            assert isinstance(limited, Refusal) and limited.status == 429
        assert await b.console_login("tok-123", "203.0.113.6") == "console"
        clock.t += 61
        assert await a.console_login("tok-123", "203.0.113.5") == "console"
    finally:
        await stop(links)


async def test_a_killed_workers_sessions_free_their_slots_when_their_lease_runs_out(redis):
    clock = Clock()
    (a, b), links = await pair(redis.url, clock, max_realtime_sessions_per_key=1)
    lease_seconds = 0.3  # refreshed every 0.1 s of real time; expiry judged by the synthetic clock
    a.shared_limits.lease_seconds = b.shared_limits.lease_seconds = lease_seconds
    try:
        held = await a.admit_session(Access("key", "key1", "198.51.100.1"))
        assert admitted(held)
        key = links[0].key("limit", "sessions-per-key", "key:key1")
        clock.t += 100  # far past the first expiry: only the refresh keeps the session counted
        deadline = clock.t + lease_seconds

        async def refreshed() -> bool:
            scores = await links[0].client.zrange(key, 0, -1, withscores=True)
            return len(scores) == 1 and scores[0][1] >= deadline - 1e-3

        await until(refreshed)  # A's refresh task pushed its lease forward while the session lives
        assert isinstance(await b.admit_session(Access("key", "key1", "198.51.100.2")), Refusal)
        await links[0].stop()  # A is killed: no release, no more refreshes
        assert isinstance(await b.admit_session(Access("key", "key1", "198.51.100.2")), Refusal)
        clock.t += lease_seconds + 0.01  # … until its lease runs out
        assert admitted(await b.admit_session(Access("key", "key1", "198.51.100.2")))
    finally:
        await stop(links)


async def test_redis_away_each_guard_enforces_the_limits_alone_and_back_the_live_sessions_count_again():
    redis = RedisServer().start()
    clock = Clock()
    try:
        (a, b), links = await pair(redis.url, clock, max_realtime_sessions_per_key=1,
                                   max_uploads_per_hour_per_client=1)
        held_a = await a.admit_session(Access("key", "key1", "198.51.100.1"))
        assert admitted(held_a) and await a.admit_upload(Access("key", "key1", "198.51.100.1")) is None
        redis.kill()
        # Fail to this process's own count, not open and not closed: B has no session of key1 and no upload of
        # .1 of its own, so it admits them; A still refuses what it alone already holds.
        started = time.monotonic()
        held_b = await b.admit_session(Access("key", "key1", "198.51.100.2"))
        assert admitted(held_b) and time.monotonic() - started < 2.0 and not links[1].up
        assert isinstance(await a.admit_session(Access("key", "key1", "198.51.100.3")), Refusal)
        assert await b.admit_upload(Access("key", "key1", "198.51.100.1")) is None
        assert (await a.admit_upload(Access("key", "key1", "198.51.100.1"))).status == 429
        assert isinstance(await b.admit_session(Access("key", "key1", "198.51.100.4")), Refusal)
        held_a.release()  # a session ending while Redis is away: nothing raised, the slot is free here
        assert a.sessions_per_key.active("key:key1") == 0

        redis.start()  # the same port, empty: as a Redis restarted without persistence
        await until(lambda: asyncio.sleep(0, links[0].up and links[1].up))
        # B's session, admitted while Redis was away, is written back: it counts for A again.
        await until(lambda: _count(links[1], "sessions-per-key", "key:key1", 1))
        refused = await a.admit_session(Access("key", "key1", "198.51.100.3"))
        assert isinstance(refused, Refusal) and "this API key" in refused.message
        held_b.release()
        await until(lambda: _count(links[1], "sessions-per-key", "key:key1", 0))
        assert admitted(await a.admit_session(Access("key", "key1", "198.51.100.3")))
        await stop(links)
    finally:
        redis.stop()
