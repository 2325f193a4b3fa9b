"""Shared state on a real redis-server (telebridge/state/): call records, voices, dial pacing and claims, session
tokens and the recordings index, each seen from two "instances" (two links), and Redis going away and coming
back. The servers' end-to-end view is in test_shared_e2e.py."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from redis_server import RedisServer
from telebridge.config import TTS
from telebridge.recording import Recorder
from telebridge.state.calls import RedisCallRegistry, StreamOutcomes
from telebridge.state.limiter import RedisClaims, RedisDialLimiter
from telebridge.state.recordings import RedisRecordingsIndex
from telebridge.state.redis_client import RedisLink, masked_url
from telebridge.state.tokens import RedisTokens
from telebridge.state.voices import RedisVoices
from telebridge.voices.store import VoiceEntry, VoiceStore

@pytest.fixture(scope="module")
def redis():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture()
async def links(redis):
    """Two instances' links sharing one Redis (a fresh key prefix per test)."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    made = [RedisLink(redis.url, prefix=prefix, instance=name, ping_interval=0.1) for name in ("a", "b")]
    for link in made:
        await link.start()
    yield made
    for link in made:
        await link.stop()


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_call_records_merge_across_instances(links):
    a, b = (RedisCallRegistry(link, ttl=600) for link in links)
    sid = "CA" + "1" * 32
    await a.update(sid, direction="outbound-api", status="queued", to="+*******0101")
    # Status callbacks land on both instances at once, out of order: status only moves forward, nothing is lost.
    await asyncio.gather(*(reg.update(sid, status=status) for reg, status in
                           [(b, "ringing"), (a, "initiated"), (b, "in-progress"), (a, "ringing")]))
    await b.update(sid, ran_here=True, transcript=[{"role": "assistant", "content": "Hi"}])
    await a.update(sid, status="completed", ended_reason="hung_up", duration=7)
    seen_a, seen_b = await a.get(sid), await b.get(sid)
    assert seen_a.status == seen_b.status == "completed" and seen_a.duration == 7
    assert [h["status"] for h in seen_a.history][-1] == "completed" and "in-progress" in {
        h["status"] for h in seen_a.history}
    assert seen_a.instance == "b" and seen_b.ran_here and not seen_a.ran_here  # it ran on b
    assert seen_a.to == "+*******0101" and seen_a.transcript == [{"role": "assistant", "content": "Hi"}]
    await b.update("CA" + "2" * 32, direction="inbound", status="ringing")
    assert [r.call_sid for r in await a.list(10)] == ["CA" + "2" * 32, sid] == [r.call_sid for r in await b.list(10)]
    await a.set_private(sid, {"data": {"name": "Ada"}, "amd": False, "agent": None})
    assert (await b.get_private(sid))["data"] == {"name": "Ada"}


async def test_stream_outcomes_reach_the_other_instance(links):
    a, b = (StreamOutcomes(RedisCallRegistry(link, ttl=600)) for link in links)
    a["CA" + "3" * 32] = "completed"  # written synchronously by a media stream, shared in the background
    assert await b.fetch("CA" + "3" * 32) == "completed"
    assert await b.fetch("CA" + "4" * 32, wait=0.1) is None


async def test_a_clone_made_on_one_instance_is_found_on_the_other(links, tmp_path):
    stores = [VoiceStore(None, tmp_path / name) for name in ("a", "b")]  # separate disks
    a, b = (RedisVoices(link, store) for link, store in zip(links, stores))
    entry = stores[0].add_clone(VoiceEntry(name="cloned_voice_Abc123Def456", tts=TTS.Piper(pitch=1.2)))
    await a.publish(entry)
    await b.ensure(entry.name)  # on a miss, fetched by name (no waiting for the event)
    assert stores[1].get(entry.name) == entry
    second = stores[0].add_clone(VoiceEntry(name="cloned_voice_Zyx987Wvu654", tts=TTS.Piper(pitch=0.9)))
    await a.publish(second)
    await until(lambda: stores[1]._cloned.get(second.name) is not None)  # … and pushed by the event
    await b.ensure_in('{"type":"session.update","session":{"voice":"cloned_voice_Nope12345678"}}')
    assert stores[1].get("cloned_voice_Nope12345678") is None
    assert [v.name for v in stores[1].listed()] == ["default", entry.name, second.name]


async def test_dial_slots_are_shared_per_account(links):
    a, b = (RedisDialLimiter(link, "AC1") for link in links)

    async def slot(limiter: RedisDialLimiter) -> tuple[float, float]:
        """The reserved slot, as bounds on this machine's clock (Redis's clock read it somewhere in between)."""
        before = time.time()
        wait = await limiter.reserve(2.0)  # 2 calls per second: slots 0.5 s apart
        return before + wait, time.time() + wait

    first, second, third = await slot(a), await slot(b), await slot(a)
    for (lo1, hi1), (lo2, hi2) in ((first, second), (second, third)):
        assert lo2 - hi1 <= 0.5 <= hi2 - lo1, (first, second, third)
    assert await RedisDialLimiter(links[0], "AC2").reserve(2.0) == 0.0  # another account has its own pace


async def test_campaign_rows_are_claimed_by_one_run(links):
    a, b = (RedisClaims(link, "contacts.csv:+14155550100", runner) for link, runner in zip(links, ("ra", "rb")))
    assert await a.claim("row-1") and not await b.claim("row-1")
    assert await a.claim("row-1")  # a retry by the same run
    assert await b.claim("row-2") and not await a.claim("row-2")


async def test_a_session_token_is_redeemed_once_anywhere(links):
    a, b = (RedisTokens(link) for link in links)
    assert await a.store("tbst_" + "x" * 43, "key1", 60)
    assert await b.redeem("tbst_" + "x" * 43) == (True, "key1")
    assert await a.redeem("tbst_" + "x" * 43) == (True, None)
    assert "x" * 43 not in str(await links[0].client.keys("*"))  # only the token's digest is stored


async def test_the_recordings_index_lists_every_instance(links, tmp_path):
    index_a, index_b = (RedisRecordingsIndex(link) for link in links)
    recording = Recorder(tmp_path, index=index_a).session("CA" + "5" * 32, transport="phone", agent="x",
                                                           call_sid="CA" + "5" * 32)
    recording.set_consent(True)
    recording.server({"type": "response.text.done", "text": "Hi"})
    recording.close()
    await until(lambda: not index_a._pending)
    listed = await index_b.list()
    assert [(e.session_id, e.instance, e.file) for e in listed] == [("CA" + "5" * 32, "a", recording.path.name)]
    assert listed[0].ended_at is not None and listed[0].lines == 3
    withdrawn = Recorder(tmp_path, index=index_a).session("rt_1", transport="realtime")
    withdrawn.set_consent(True)
    await until(lambda: not index_a._pending)
    assert len(await index_b.list()) == 2
    withdrawn.set_consent(False)  # the file is deleted: so is its entry
    await until(lambda: not index_a._pending)
    assert [e.session_id for e in await index_b.list()] == ["CA" + "5" * 32]


async def test_redis_away_then_back(tmp_path):
    """Redis killed: operations fail fast to the local copy, health says so; restarted: the link reconnects and
    pushes what changed meanwhile."""
    redis = RedisServer().start()
    try:
        a, b = (RedisLink(redis.url, prefix="away", instance=n, ping_interval=0.1) for n in ("a", "b"))
        await a.start()
        await b.start()
        reg_a, reg_b = RedisCallRegistry(a, ttl=600), RedisCallRegistry(b, ttl=600)
        await reg_a.update("CA" + "6" * 32, status="ringing", direction="inbound")
        redis.kill()
        started = time.monotonic()
        record = await reg_a.update("CA" + "6" * 32, status="completed", ended_reason="hung_up")
        assert record.status == "completed" and not a.up and time.monotonic() - started < 2.0
        assert (await reg_a.get("CA" + "6" * 32)).status == "completed"  # the local copy answers
        report = a.report()
        assert report["up"] is False and report["down_since"] and "Error" in report["detail"]
        assert await RedisDialLimiter(a, "AC1").wait_turn(1.0) == 0.0  # pacing falls back to the run's own
        assert await RedisClaims(a, "c", "r").claim("k")  # a lone run goes on
        await until(lambda: not b.up)
        redis.start()  # the same port, empty: as a Redis restarted without persistence
        await until(lambda: a.up and b.up)
        await until(lambda: not reg_a._dirty)
        assert (await reg_b.get("CA" + "6" * 32)).status == "completed"  # pushed once Redis was back
        assert a.reconnects == 1 and a.report()["detail"] == "connected"
        await a.stop()
        await b.stop()
    finally:
        redis.stop()


def test_redis_urls_are_shown_without_their_password():
    assert masked_url("redis://user:s3cret@db.internal:6380/2") == "redis://user:***@db.internal:6380/2"
    assert masked_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


async def test_a_run_of_the_same_campaign_leaves_claimed_rows_to_the_other(tmp_path, redis):
    """Two campaign runs with the same name: each row is dialed by exactly one of them."""
    from types import SimpleNamespace

    from telebridge.outbound.campaign.contacts import load_contacts
    from telebridge.outbound.campaign.runner import CampaignRunner
    from telebridge.outbound.campaign.scheduler import Policy
    from telebridge.outbound.campaign.shared import open_shared
    from telebridge.outbound.campaign.state import CampaignState
    from telebridge.outbound.campaign.tracking import CallOutcome
    from telebridge.settings import Settings

    path = tmp_path / "contacts.csv"
    path.write_text("phone\n" + "\n".join(f"+1415555{n:04d}" for n in range(101, 109)) + "\n")
    settings = Settings(_env_file=None, redis_url=redis.url, redis_prefix=f"c{uuid.uuid4().hex[:6]}",
                        twilio_account_sid="AC" + "9" * 32)
    dialed: dict[str, list[str]] = {"one": [], "two": []}
    counts = {}

    async def run(name: str) -> None:
        _, contacts = load_contacts(path)
        plan = SimpleNamespace(settings=settings, state_path=tmp_path / f"{name}.sqlite", campaign_id="contacts",
                               policy=Policy(concurrency=2, cps=50.0))
        shared = await open_shared(plan)

        async def dial(contact) -> str:
            await shared.before_dial(contact.key)
            dialed[name].append(contact.to)
            return f"CA{name}{contact.row:030d}"

        async def track(sid: str) -> CallOutcome:
            await asyncio.sleep(0.01)
            return CallOutcome(status="completed")

        state = CampaignState(plan.state_path)
        try:
            counts[name] = await CampaignRunner(contacts, state, plan.policy, dial=dial, track=track).run()
        finally:
            state.close()
            await shared.aclose()

    await asyncio.gather(run("one"), run("two"))
    assert sorted(dialed["one"] + dialed["two"]) == [f"+1415555{n:04d}" for n in range(101, 109)]
    assert counts["one"]["completed"] + counts["two"]["completed"] == 8
    assert counts["one"]["elsewhere"] == counts["two"]["completed"], counts


async def test_an_amd_verdict_reaches_the_instance_running_the_call(links, tmp_path):
    from types import SimpleNamespace

    from telebridge.settings import Settings
    from telebridge.state import SharedState

    heard = []
    session = SimpleNamespace(on_answered_by=lambda verdict, source: heard.append((verdict, source)))
    runtime = SimpleNamespace(calls={"CA" + "7" * 32: session})
    settings = Settings(_env_file=None, redis_url=links[0].url, redis_prefix=links[0].prefix, instance_id="c")
    running = SharedState(settings, VoiceStore(None, tmp_path / "v"))
    running.bind(runtime)
    await running.start()
    try:
        receiving = SharedState(settings.model_copy(update={"instance_id": "d"}), VoiceStore(None, tmp_path / "w"))
        await receiving.start()
        await receiving.deliver_amd("CA" + "7" * 32, "machine_end_beep")  # its AMD callback reached another one
        await until(lambda: heard == [("machine_end_beep", "twilio")])
        await receiving.stop()
    finally:
        await running.stop()


async def test_without_redis_the_registry_lists_this_process_calls_newest_first():
    from telebridge.outbound.registry import MemoryCallRegistry

    registry = MemoryCallRegistry(limit=3)
    for n in range(4):
        await registry.update(f"CA{n:032d}", status="ringing", direction="inbound")
    await registry.update(f"CA{1:032d}", status="completed")  # an update does not make an old call new
    assert [r.call_sid for r in await registry.list(10)] == [f"CA{n:032d}" for n in (3, 2, 1)]
    assert [r.call_sid for r in await registry.list(1)] == [f"CA{3:032d}"]
