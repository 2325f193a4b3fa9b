"""The console against the real server: auth over HTTP (bearer, login cookie, loopback-only), the live feed (SSE)
during a simulated phone call with real speech, hang-up and transfer through the local fake of Twilio's REST API,
closing a realtime session, and the page itself in headless Debian Chromium (screenshots in test-artifacts/).

One server for the module (a console token, an API key, Twilio's REST API faked); each call is short."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import pytest
import websockets

from browser import launch_chromium, save_screenshot
from conftest import AUTH_TOKEN, LiveServer
from fakes.twilio_api import FakeTwilioApi, FakeTwilioServer
from telebridge.console.auth import COOKIE
from telebridge.simulator import Say, simulate_call

TOKEN = "console-token-0123456789"
KEY = "api-key-for-the-console-0123"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
QUESTION = [Say(at=None, text="What are your opening hours?", after_agent_quiet=0.8)]
TRANSFER_TO = "+14155550123"

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    api = FakeTwilioApi(AUTH_TOKEN)
    fake = FakeTwilioServer(api).start()
    srv = LiveServer(console_token=TOKEN, api_keys=KEY, twilio_api_base_url=fake.url,
                     recordings_dir=tmp_path_factory.mktemp("recordings")).start()
    yield api, srv
    srv.stop()
    fake.stop()


class Feed:
    """The console's live feed (SSE), read in the background into ``events``."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.events: list[dict] = []
        self.status: int | None = None
        self.task: asyncio.Task | None = None

    async def _read(self) -> None:
        async with httpx.AsyncClient(timeout=None) as http:
            async with http.stream("GET", self.url + "/console/api/events", headers=self.headers) as response:
                self.status = response.status_code
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        self.events.append(json.loads(line[6:]))

    async def __aenter__(self) -> Feed:
        self.task = asyncio.create_task(self._read())
        await self.wait(lambda e: e["type"] == "snapshot")
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def wait(self, match: Callable[[dict], bool], timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if match(event):
                    return event
            if self.task is not None and self.task.done():
                raise AssertionError(f"the feed ended (HTTP {self.status}): {self.task.exception()!r}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"no matching event in {len(self.events)}: {[e['type'] for e in self.events][-20:]}")

    def of(self, kind: str, call_id: str | None = None) -> list[dict]:
        return [e for e in self.events if e["type"] == kind and (call_id is None or e.get("call_id") == call_id
                                                                 or e.get("call", {}).get("id") == call_id)]


# --- who gets in -------------------------------------------------------------------------------------------------
async def test_the_token_or_a_key_opens_the_console_and_metrics_and_a_wrong_one_is_refused(env):
    _, srv = env
    async with httpx.AsyncClient(base_url=srv.url) as http:
        page = await http.get("/console")  # the page holds no data: it loads to show the login form
        assert page.status_code == 200 and "login-form" in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert (await http.get("/console/static/app.js")).status_code == 200
        for path in ("/console/api/calls", "/console/api/events", "/metrics"):
            bare = await http.get(path)
            wrong = await http.get(path, headers={"Authorization": "Bearer not-the-token"})
            assert (bare.status_code, wrong.status_code) == (401, 401), path
            assert wrong.json()["error"]["code"] == "invalid_api_key"
        for credential, via in ((TOKEN, "console"), (KEY, "key")):
            headers = {"Authorization": f"Bearer {credential}"}
            who = (await http.get("/console/api/session", headers=headers)).json()
            assert who == {"via": via, "label": "console" if via == "console" else "key1", "login_required": True}
            snapshot = (await http.get("/console/api/calls", headers=headers)).json()
            assert set(snapshot) == {"now", "live", "past", "stats", "recordings"} and len(snapshot["stats"]) == 60
            metrics = await http.get("/metrics", headers=headers)
            assert metrics.status_code == 200 and "telebridge_calls_active" in metrics.text


async def test_logging_in_sets_a_signed_http_only_cookie_for_the_console_only(env):
    _, srv = env
    async with httpx.AsyncClient(base_url=srv.url) as http:
        refused = await http.post("/console/login", json={"token": "guess"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_token"
        assert "set-cookie" not in refused.headers
        ok = await http.post("/console/login", json={"token": TOKEN})
        assert ok.status_code == 200 and ok.json()["label"] == "console"
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=v1.console.") and TOKEN not in cookie
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes and "secure" not in attributes  # plain http
        assert "samesite=strict" in cookie.lower() and "path=/console" in cookie.lower()
        assert (await http.get("/console/api/calls")).status_code == 200  # the client kept the cookie
        assert (await http.get("/console/api/session")).json()["via"] == "session"
        assert (await http.get("/metrics")).status_code == 401  # the cookie stands in for the key on /console only
        assert (await http.post("/console/logout")).status_code == 200
        assert (await http.get("/console/api/calls")).status_code == 401
        http.cookies.set(COOKIE, "v1.console.99999999999.AAAA.forged", path="/console")
        forged = await http.get("/console/api/calls")
        assert forged.status_code == 401 and forged.json()["error"]["code"] == "session_expired"
        https = await http.post("/console/login", json={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"})
        assert "secure" in https.headers["set-cookie"].lower()  # behind a TLS proxy (trusted: loopback)


async def test_with_no_token_or_key_the_console_refuses_anyone_not_on_loopback(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/console/api/calls")).status_code == 200  # loopback, nothing configured
        assert (await http.get("/console/api/session")).json()["via"] == "loopback"
        for path in ("/console", "/console/api/calls", "/metrics"):
            relayed = await http.get(path, headers={"X-Forwarded-For": "203.0.113.9"})  # a proxy's remote client
            assert relayed.status_code == 403, path
            assert "TELEBRIDGE_CONSOLE_TOKEN" in relayed.json()["error"]["message"]


# --- the live feed, transfer and hang-up -------------------------------------------------------------------------
async def test_the_feed_follows_a_phone_call_and_the_console_transfers_it(env):
    api, srv = env
    async with Feed(srv.url, BEARER) as feed:
        call_task = asyncio.create_task(simulate_call(srv.url, script=QUESTION, auth_token=AUTH_TOKEN, duration=40,
                                                      transcribe=False, twilio_api=api))
        opened = await feed.wait(lambda e: e["type"] == "call")
        call_id = opened["call"]["id"]
        assert opened["call"]["number"] == "+*******0001" and opened["call"]["transport"] == "phone"
        assert opened["call"]["agent"] and opened["call"]["direction"] == "inbound"
        row = (await feed.wait(lambda e: e["type"] == "latency" and e["row"]["heard"] is not None))["row"]
        assert all(row[k] is not None and row[k] >= 0 for k in ("endpointing", "stt", "llm_first_token",
                                                                "tts_first_audio", "total", "heard"))
        removed = {e["id"] for e in feed.of("entry_removed", call_id)}
        entries = {e["entry"]["id"]: e["entry"] for e in feed.of("entry", call_id) if e["entry"]["id"] not in removed}
        whose = [e["who"] for e in entries.values() if e["who"] != "event"]
        assert whose[0] == "agent" and "caller" in whose[1:-1] and whose[-1] == "agent", whose  # greeting, Q, A
        states = [e["state"] for e in feed.of("state", call_id)]
        for state in ("thinking", "speaking", "caller speaking", "listening"):
            assert state in states, states
        assert feed.of("levels")

        async with httpx.AsyncClient(base_url=srv.url, headers=BEARER) as http:
            bad = await http.post(f"/console/api/calls/{call_id}/transfer", json={"target": "555-0123"})
            assert bad.status_code == 422 and "international form" in bad.json()["error"]["message"]
            gone = await http.post("/console/api/calls/CA-no-such-call/transfer", json={"target": TRANSFER_TO})
            assert gone.status_code == 404
            assert not api.requests_for(call_id)  # nothing reached Twilio
            moved = await http.post(f"/console/api/calls/{call_id}/transfer", json={"target": TRANSFER_TO})
            assert moved.status_code == 200, moved.text
        call = await call_task
        assert call.ended_by == "rest" and f">{TRANSFER_TO}</Number></Dial>" in (call.redirect_twiml or "")
        ended = (await feed.wait(lambda e: e["type"] == "ended"))["call"]
        assert (ended["id"], ended["outcome"], ended["turns"]) == (call_id, "console_transfer", 1)
        markers = [e["entry"]["text"] for e in feed.of("entry", call_id) if e["entry"]["who"] == "event"]
        assert "transfer to +*******0123 requested from the console" in markers
    async with httpx.AsyncClient(base_url=srv.url, headers=BEARER) as http:
        detail = (await http.get(f"/console/api/calls/{call_id}")).json()
        assert detail["source"] == "history" and detail["outcome"] == "console_transfer"
        assert detail["latency"][0]["heard"] == row["heard"] and len(detail["transcript"]) >= 3
        past = (await http.get("/console/api/calls")).json()["past"]
        assert past[0]["id"] == call_id and past[0]["duration"] > 0


async def test_hanging_up_a_realtime_session_closes_it_and_its_recording_opens_as_a_past_call(env):
    _, srv = env
    ws_url = srv.url.replace("http", "ws") + "/v1/realtime"
    async with httpx.AsyncClient(base_url=srv.url, headers=BEARER) as http:
        assert (await http.post("/console/api/calls/rt_nothing/hangup")).status_code == 404
        async with websockets.connect(ws_url, subprotocols=["realtime"],
                                      additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            await ws.send(json.dumps({"type": "session.update",
                                      "session": {"voice": "default", "allow_recording": True}}))
            deadline = time.monotonic() + 10
            live = []
            while not live and time.monotonic() < deadline:
                live = [c for c in (await http.get("/console/api/calls")).json()["live"] if c["transport"] == "realtime"]
                await asyncio.sleep(0.05)
            (session,) = live
            assert session["number"] == "" and session["id"].startswith("rt_")
            hung = await http.post(f"/console/api/calls/{session['id']}/hangup")
            assert hung.status_code == 202
            with pytest.raises(websockets.ConnectionClosedOK):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            past = (await http.get(f"/console/api/calls/{session['id']}")).json()
            if not past["live"]:
                break
            await asyncio.sleep(0.05)
        assert past["outcome"] == "console_hangup" and past["recording"] is True
        assert any(e["text"] == "hang-up requested from the console" for e in past["transcript"])
        recorded = (await http.get(f"/console/api/calls/{session['id']}/recording")).json()
        assert recorded["source"] == "recording" and recorded["id"] == session["id"]
        assert recorded["outcome"] == "recorded" and recorded["transport"] == "realtime"
        listing = (await http.get("/console/api/calls")).json()
        assert session["id"] in {c["id"] for c in listing["past"]}
        assert session["id"] not in {c["id"] for c in listing["recordings"]}  # listed once, from the history
        assert (await http.get("/console/api/calls/rt_0000/recording")).status_code == 404


# --- the page, in Chromium --------------------------------------------------------------------------------------
async def test_the_page_refuses_a_wrong_token_then_shows_a_call_live_and_hangs_it_up(env):
    api, srv = env
    async with launch_chromium() as browser:
        page = await browser.new_page()
        await page.goto(srv.url + "/console")
        await page.get_by_test_id("login-form").wait_for()
        await page.fill("#token", "not-the-token")
        await page.click("#login-form button[type=submit]")
        error = page.get_by_test_id("login-error")
        await page.wait_for_function("document.querySelector('[data-testid=login-error]').textContent.includes('Refused')")
        assert "not the console token" in await error.text_content()
        assert await page.locator("#main").is_hidden()
        await save_screenshot(page, "console-wrong-token")

        await page.fill("#token", TOKEN)
        await page.click("#login-form button[type=submit]")
        await page.locator("#main").wait_for()
        await page.wait_for_selector("[data-testid=feed-status][data-state=live]")
        assert await page.get_by_test_id("softphone-link").get_attribute("href") == "/console/phone"
        assert await page.locator("#logout").is_visible()

        call_task = asyncio.create_task(simulate_call(srv.url, script=QUESTION, auth_token=AUTH_TOKEN, duration=40,
                                                      transcribe=False, twilio_api=api))
        card = page.get_by_test_id("live-call")
        await card.wait_for(timeout=20_000)
        call_id = await card.get_attribute("data-call-id")
        assert await card.get_by_test_id("call-number").text_content() == "+*******0001"
        transcript = page.get_by_test_id("transcript")
        await transcript.get_by_test_id("entry-agent").first.wait_for(timeout=20_000)  # the greeting
        await transcript.get_by_test_id("entry-caller").first.wait_for(timeout=30_000)  # the question
        await page.get_by_test_id("latency-row").first.wait_for(timeout=30_000)  # the answer's latency
        await page.wait_for_function(  # and when it was heard
            "document.querySelector('[data-testid=latency-heard]')?.textContent.match(/^[0-9]+$/)", timeout=15_000)
        assert await transcript.get_by_test_id("entry-agent").count() >= 2  # the transcript grew
        await page.wait_for_function(  # the meters moved while the agent spoke
            "[...document.querySelectorAll('[data-testid=live-call] .meter > span')].some(m => m.style.transform "
            "&& m.style.transform !== 'scaleX(0)' && m.style.transform !== 'scaleX(0.000)')", timeout=15_000)
        await save_screenshot(page, "console-live-call")

        hang_up = card.get_by_test_id("hangup")
        await hang_up.click()
        assert await hang_up.text_content() == "Confirm hang-up"
        await hang_up.click()
        await card.wait_for(state="detached", timeout=15_000)  # the call left the live list
        assert await page.get_by_test_id("live-count").text_content() == "0"
        past = page.locator(f"[data-testid=past-call][data-call-id='{call_id}']")
        await past.wait_for()
        assert await past.get_by_test_id("past-outcome").text_content() == "console_hangup"
        await page.get_by_test_id("detail-state").filter(has_text="console_hangup").wait_for()
        await save_screenshot(page, "console-after-hang-up")

    call = await call_task
    assert call.ended_by == "rest" and call.redirect_twiml is None
    (update,) = api.requests_for(call_id)
    assert update.form == {"Status": "completed"}
