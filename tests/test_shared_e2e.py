"""Two telebridge instances sharing one real redis-server behave as one service: a voice cloned on A speaks on
B, an outbound call placed on A runs on B and both list it with its status, a session token minted on A opens a
session on B, the per-key session limit and the upload window count both instances, and Redis killed mid-call
leaves the call running and comes back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import websockets

from conftest import AUTH_TOKEN, LiveServer, finished_call
from fakes.twilio_api import FakeTwilioApi, FakeTwilioServer
from redis_server import RedisServer
from telebridge.simulator import Say, simulate_call
from telebridge.simulator.callee import human

AGENT = str(Path(__file__).parent / "agents" / "voice_agent.py")
ACCOUNT = "AC" + "5" * 32
API_KEY = "shared-state-key-0123"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
HOURS = "We are open every day, from early morning until late evening."


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    redis = RedisServer().start()
    api = FakeTwilioApi(AUTH_TOKEN)
    fake = FakeTwilioServer(api).start()
    servers = []
    for name in ("a", "b"):
        srv = LiveServer(agent=AGENT, redis_url=redis.url, instance_id=name, api_key=API_KEY,
                         twilio_account_sid=ACCOUNT, twilio_api_base_url=fake.url,
                         max_realtime_sessions_per_key=2, max_uploads_per_hour_per_client=2,
                         voice_store_dir=tmp_path_factory.mktemp(f"voices_{name}"))  # separate disks
        servers.append(srv)
    a, b = servers
    b.settings.public_url = b.url
    a.settings.public_url = b.url  # the load balancer sends Twilio's requests for A's calls to B
    for srv in servers:
        srv.start()
    yield redis, api, a, b
    for srv in servers:
        srv.stop()
    fake.stop()
    redis.stop()


async def _json(method: str, url: str, **kwargs) -> tuple[int, dict]:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.request(method, url, **kwargs)
    return response.status_code, response.json()


async def _until(fetch, predicate, timeout: float = 15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await fetch()
        if predicate(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_a_voice_cloned_on_a_speaks_on_b(cluster):
    from test_voices import sample_wav

    _, _, a, b = cluster
    async with httpx.AsyncClient(timeout=120) as http:
        response = await http.post(a.url + "/v1/voices", headers=HEADERS,
                                   files={"file": ("me.wav", sample_wav(1.25, 1.0), "audio/wav")})
    assert response.status_code == 200, response.text
    name = response.json()["name"]
    clone = a.runtime.voices.get(name)
    assert not (b.settings.voice_store_dir / f"{name}.json").exists()  # B has it through Redis, not a shared disk

    # A realtime session on B picks the clone as soon as it exists.
    async with websockets.connect(b.url.replace("http", "ws") + "/v1/realtime", subprotocols=["realtime"],
                                  additional_headers=HEADERS) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"voice": name}}))
        async with asyncio.timeout(30):
            while (event := json.loads(await ws.recv()))["type"] != "response.created":
                assert event["type"] != "error", event
    assert event["response"]["voice"] == name
    assert b.runtime.voices.get(name) == clone and b.runtime.resolve_tts(
        type(clone.tts)(voice=name)) == clone.tts  # B resolves it to exactly A's settings

    # A phone call on B whose agent names the clone is spoken in it: the resolved engine is the clone's.
    call = await simulate_call(b.url, script=[], auth_token=AUTH_TOKEN, duration=6, end_when_quiet=0.8,
                               transcribe=False, custom_parameters={"voice": name})
    assert call.agent_segments, "the greeting was heard"
    session = await finished_call(b, call.call_sid)
    assert session.config.tts.voice == name
    assert any(key[0] == "tts" and f'"pitch":{clone.tts.pitch}' in key[1] for key in b.runtime._engines), \
        list(b.runtime._engines)


async def test_an_outbound_call_placed_on_a_is_one_call_for_both(cluster):
    _, api, a, b = cluster
    api.callees["+14155550199"] = human("Hello?", hang_up_when_quiet=1.0)
    status, body = await _json("POST", a.url + "/v1/calls", headers=HEADERS,
                               json={"to": "+14155550199", "from": "+14155550100"})
    assert status == 201, body
    sid = body["call_sid"]
    result = await api.wait_outbound(sid)
    assert result.status == "completed"
    # Every request Twilio made about the call went to B (A's public URL is B's address) and was accepted.
    paths = {path for path, _, code in result.callbacks if code in (200, 204)}
    assert {"/twilio/outbound", "/twilio/call-status"} <= paths, result.callbacks
    assert sid not in a.runtime.calls and await finished_call(b, sid)

    async def record(srv: LiveServer) -> dict:
        return (await _json("GET", f"{srv.url}/v1/calls/{sid}", headers=HEADERS))[1]

    on_a = await _until(lambda: record(a), lambda r: r.get("status") == "completed" and r.get("transcript"))
    on_b = await record(b)
    assert on_a["status"] == on_b["status"] == "completed" and on_a["ended_reason"] == on_b["ended_reason"]
    assert [h["status"] for h in on_a["history"]][-1] == "completed" and "ringing" in [
        h["status"] for h in on_a["history"]]
    assert on_a["instance"] == on_b["instance"] == "b" and on_b["ran_here"] and not on_a["ran_here"]
    assert on_a["transcript"][0] == {"role": "assistant", "content": "Hello there."}
    for srv in (a, b):
        status, listed = await _json("GET", srv.url + "/v1/calls?limit=20", headers=HEADERS)
        assert status == 200 and sid in [c["call_sid"] for c in listed["calls"]]


async def test_a_session_token_minted_on_a_opens_one_session_on_b(cluster):
    _, _, a, b = cluster
    status, body = await _json("POST", a.url + "/v1/realtime/sessions", headers=HEADERS)
    assert status == 200, body
    token = body["client_secret"]["value"]
    url = b.url.replace("http", "ws") + "/v1/realtime"
    async with websockets.connect(url, subprotocols=["realtime", f"telebridge-token.{token}"]) as ws:
        assert ws.subprotocol == "realtime"
    for srv in (a, b):  # used up everywhere
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(srv.url.replace("http", "ws") + "/v1/realtime",
                                          subprotocols=["realtime", f"telebridge-token.{token}"]):
                pass
        assert refused.value.response.status_code == 401


async def test_the_limits_count_both_instances(cluster):
    """Per-key limit 2: one session on A and one on B fill it, so a third is refused on either; an address's two
    uploads an hour are two in the whole service."""
    from test_security import closed_with_error, talk

    _, _, a, b = cluster

    def open_session(srv: LiveServer):
        return websockets.connect(srv.url.replace("http", "ws") + "/v1/realtime", subprotocols=["realtime"],
                                  additional_headers=HEADERS)

    async with open_session(a) as one, open_session(b) as two:
        await talk(one)
        await talk(two)
        for srv in (a, b):
            async with open_session(srv) as third:
                error = await closed_with_error(third)
            assert error["error"]["code"] == "rate_limit_exceeded" and "API key" in error["error"]["message"]
            assert third.close_code == 1008
        await talk(one)  # the sessions holding the slots carried on
        await talk(two)

    async def admitted() -> bool:  # the ended sessions' slots are given back (in the background)
        async with open_session(a) as again:
            try:
                await talk(again)
                return True
            except (AssertionError, websockets.ConnectionClosed):
                return False

    assert await _until(admitted, bool, timeout=10)

    client = {**HEADERS, "X-Forwarded-For": "198.51.100.30"}  # through the trusted loopback proxy
    async with httpx.AsyncClient(timeout=30) as http:
        codes = [(await http.post(srv.url + "/v1/voices", headers=client, json={"file": "not multipart"}))
                 for srv in (a, b, a)]
    assert [r.status_code for r in codes] == [415, 415, 429], [r.text for r in codes]
    assert int(codes[-1].headers["retry-after"]) > 3500


async def test_redis_killed_mid_call_the_call_goes_on_and_redis_comes_back(cluster):
    """Last in this module: it kills the cluster's Redis (and starts it again, empty). The call runs on B."""
    redis, _, a, b = cluster

    async def health(srv: LiveServer) -> dict:
        return (await _json("GET", srv.url + "/v1/health"))[1]["redis"]

    assert (await health(b))["up"] is True
    call_task = asyncio.create_task(simulate_call(
        b.url, script=[Say(at=None, text="What are your opening hours?", after_agent_quiet=0.5)],
        auth_token=AUTH_TOKEN, duration=25, end_when_quiet=1.5, transcribe=False))
    await _until(lambda: asyncio.sleep(0, b.runtime.calls), bool, timeout=10)  # the call is up
    redis.kill()
    down = await _until(lambda: health(b), lambda r: r["up"] is False, timeout=5)
    assert down["up"] is False and down["degraded"] and down["down_since"]
    assert (await _json("GET", b.url + "/v1/health"))[0] == 200  # calls do not need Redis: still healthy

    call = await call_task
    session = await finished_call(b, call.call_sid)
    assert [m["content"] for m in session.history if m["role"] == "assistant"][:2] == ["Hello there.", HOURS]
    status, local = await _json("GET", f"{b.url}/v1/calls/{call.call_sid}", headers=HEADERS)
    assert status == 200 and local["ended_reason"] and local["ran_here"]  # recorded locally meanwhile

    redis.start()  # same port, empty
    for srv in (a, b):
        report = await _until(lambda srv=srv: health(srv), lambda r: r["up"] is True, timeout=10)
        assert report["up"] is True and report["reconnects"] >= 1 and "degraded" not in report
    # What B recorded while Redis was away was pushed: A sees the call.
    on_a = await _until(lambda: _json("GET", f"{a.url}/v1/calls/{call.call_sid}", headers=HEADERS),
                        lambda r: r[0] == 200)
    assert on_a[0] == 200 and on_a[1]["instance"] == "b" and on_a[1]["ended_reason"] == local["ended_reason"]


async def test_the_console_on_a_lists_and_hangs_up_a_call_running_on_b(cluster):
    _, api, a, b = cluster
    call = asyncio.create_task(simulate_call(
        b.url, script=[Say(at=None, text="Tell me a story please.", after_agent_quiet=0.6)], auth_token=AUTH_TOKEN,
        duration=40, transcribe=False, twilio_api=api, account_sid=ACCOUNT))

    async def elsewhere():
        return (await _json("GET", a.url + "/console/api/elsewhere", headers=HEADERS))[1]

    seen = await _until(elsewhere, lambda d: d["calls"])
    assert seen["shared"] and seen["instance"] == "a"
    (listed,) = seen["calls"]
    assert listed["instance"] == "b" and listed["direction"] == "inbound" and "*" in listed["number"]
    mine = await _json("GET", b.url + "/console/api/elsewhere", headers=HEADERS)
    assert mine[1]["calls"] == []  # B shows it among its own live calls
    status, body = await _json("POST", a.url + f"/console/api/calls/{listed['id']}/hangup", headers=HEADERS)
    assert status == 202, body
    result = await asyncio.wait_for(call, 30)
    assert any(r.form.get("Status") == "completed" for r in api.requests_for(listed["id"]))
    assert result.ended_by == "rest"  # Twilio ended the call (the hang-up went through its REST API)
    await finished_call(b, listed["id"])
    assert (await elsewhere())["calls"] == []
