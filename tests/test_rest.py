"""Hanging up and transferring through Twilio's REST API (the real ``twilio`` SDK) against a local fake of it,
and the built-in tools that ask for it."""

from __future__ import annotations

import base64

import pytest

from fakes.twilio_api import FakeCall, FakeTwilioApi, FakeTwilioServer
from telebridge.session import SessionConfig
from telebridge.settings import Settings
from telebridge.tools import builtin_tool_schemas, make_builtin_tools, resolve_target
from telebridge.twilio.rest import TwilioCallControl

TOKEN = "rest-test-token"
ACCOUNT = "AC" + "1" * 32


@pytest.fixture(scope="module")
def fake_api():
    api = FakeTwilioApi(TOKEN)
    server = FakeTwilioServer(api).start()
    yield api, server.url
    server.stop()


def control(base_url: str, call_sid: str, token: str = TOKEN) -> TwilioCallControl:
    return TwilioCallControl(call_sid=call_sid, account_sid=ACCOUNT, username=ACCOUNT, password=token,
                             base_url=base_url)


def new_call(api: FakeTwilioApi, n: int) -> str:
    sid = "CA" + f"{n:032x}"
    api.calls[sid] = FakeCall(sid, ACCOUNT)
    return sid


async def test_hang_up_posts_status_completed_with_basic_auth(fake_api):
    api, url = fake_api
    sid = new_call(api, 1)
    ctl = control(url, sid)
    try:
        assert await ctl.hang_up() is True
    finally:
        await ctl.aclose()
    (req,) = api.requests_for(sid)
    assert req.method == "POST" and req.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}.json"
    assert req.form == {"Status": "completed"}
    assert req.auth == (ACCOUNT, TOKEN)
    assert req.user_agent.startswith("twilio-python/")
    assert api.calls[sid].status == "completed"


async def test_transfer_sends_dial_twiml(fake_api):
    api, url = fake_api
    sid = new_call(api, 2)
    ctl = control(url, sid)
    try:
        assert await ctl.transfer("+15557654321") is True
        assert await ctl.transfer("sip:desk@example.com") is True
        assert await ctl.transfer("900-PREMIUM") is False  # never dials anything but E.164 or SIP
    finally:
        await ctl.aclose()
    first, second = api.requests_for(sid)
    assert "<Dial><Number>+15557654321</Number></Dial>" in first.form["Twiml"]
    assert "<Sip>sip:desk@example.com</Sip>" in second.form["Twiml"]


async def test_unknown_call_is_20404_and_counts_as_hung_up(fake_api):
    api, url = fake_api
    ctl = control(url, "CA" + "f" * 32)
    try:
        assert await ctl.hang_up() is True  # already gone: nothing left to hang up
        assert await ctl.transfer("+15557654321") is False
    finally:
        await ctl.aclose()


async def test_wrong_credentials_fail_without_raising(fake_api):
    api, url = fake_api
    sid = new_call(api, 3)
    ctl = control(url, sid, token="wrong")
    try:
        assert await ctl.hang_up() is False
    finally:
        await ctl.aclose()
    assert api.calls[sid].status == "in-progress"


async def test_unreachable_api_fails_without_raising():
    ctl = control("http://127.0.0.1:9", "CA" + "0" * 32)
    try:
        assert await ctl.hang_up() is False
    finally:
        await ctl.aclose()


async def test_fake_speaks_twilio_errors(fake_api):
    import httpx

    api, url = fake_api
    sid = new_call(api, 4)
    auth = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    async with httpx.AsyncClient(base_url=url) as client:
        path = f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}.json"
        ok = await client.post(path, data={"Status": "completed"}, headers={"Authorization": auth})
        again = await client.post(path, data={"Status": "completed"}, headers={"Authorization": auth})
        missing = await client.get(path.replace(sid, "CA" + "e" * 32), headers={"Authorization": auth})
        anonymous = await client.get(path)
    assert ok.status_code == 200 and ok.json()["status"] == "completed" and ok.json()["sid"] == sid
    assert again.status_code == 400 and again.json()["code"] == 21220
    assert missing.status_code == 404 and missing.json()["code"] == 20404
    assert anonymous.status_code == 401 and anonymous.json()["code"] == 20003


def test_control_from_settings_needs_credentials():
    plain = Settings(_env_file=None)
    assert TwilioCallControl.from_settings(plain, "CA" + "0" * 32, ACCOUNT) is None
    with_token = Settings(_env_file=None, twilio_auth_token="t", twilio_api_base_url="http://127.0.0.1:1")
    ctl = TwilioCallControl.from_settings(with_token, "CA" + "0" * 32, ACCOUNT)
    assert ctl is not None and ctl.account_sid == ACCOUNT
    assert ctl._client.api.base_url == "http://127.0.0.1:1"


# --- the built-in tools ------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.ends: list[str] = []
        self.transfers: list[tuple[str, str]] = []

    def request_end_call(self, reason: str) -> None:
        self.ends.append(reason)

    def request_transfer(self, target: str, name: str) -> None:
        self.transfers.append((target, name))


async def test_builtin_tools_request_and_allow_list():
    targets = {"Sales": "+15557654321", "desk": "sip:desk@example.com"}
    rec = Recorder()
    tools = make_builtin_tools(["end_call", "transfer_call"], rec, targets)
    assert "goodbye" in (await tools["end_call"]()).lower()
    assert rec.ends == ["end_call"]
    assert "sales" in (await tools["transfer_call"](to="sales")).lower()
    refused = await tools["transfer_call"](to="+19005551234")
    assert refused.startswith("Error") and "Sales" in refused
    assert await tools["transfer_call"](to="sip:desk@example.com")
    assert rec.transfers == [("+15557654321", "Sales"), ("sip:desk@example.com", "desk")]
    assert resolve_target(" DESK ", targets) == "sip:desk@example.com"
    assert make_builtin_tools(["end_call"], rec, targets).keys() == {"end_call"}


def test_builtin_tool_schemas_follow_the_config():
    cfg = SessionConfig(initial_messages=[], builtin_tools=["end_call", "transfer_call"],
                        transfer_targets={"sales": "+15557654321"})
    end, transfer = builtin_tool_schemas(cfg)
    assert end["function"]["name"] == "end_call"
    assert transfer["function"]["parameters"]["properties"]["to"]["enum"] == ["sales"]
    assert builtin_tool_schemas(SessionConfig(initial_messages=[])) == []
    with pytest.raises(ValueError, match="E.164"):
        SessionConfig(initial_messages=[], transfer_targets={"x": "12345"})


# --- transfer options: caller ID, ring timeout, whisper -----------------------------------------------------------
async def test_transfer_sends_caller_id_timeout_and_whisper_twiml(fake_api):
    api, url = fake_api
    sid = new_call(api, 5)
    ctl = control(url, sid)
    try:
        assert await ctl.transfer("+15557654321", "+15559870002", timeout=25,
                                  whisper_url="https://tb.example.com/twilio/transfer-whisper?d=tok&x=1") is True
        assert await ctl.transfer("+15557654321", timeout=3) is False  # refused before reaching Twilio
    finally:
        await ctl.aclose()
    (req,) = api.requests_for(sid)
    assert req.form["Twiml"] == api.calls[sid].twiml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="+15559870002" timeout="25">'
        '<Number method="POST" url="https://tb.example.com/twilio/transfer-whisper?d=tok&amp;x=1">+15557654321'
        "</Number></Dial></Response>"
    )
    assert api.calls[sid].twiml_updates == [req.form["Twiml"]]


def test_transfer_caller_id_defaults_to_the_calls_twilio_number():
    from telebridge.twilio.transfer import transfer_caller_id

    inbound = {"Direction": "inbound", "From": "+14155550123", "To": "+18005550100"}
    outbound = {"Direction": "outbound-api", "From": "+18005550100", "To": "+14155550123"}
    plain = SessionConfig(initial_messages=[])
    assert transfer_caller_id(plain, inbound) == "+18005550100"
    assert transfer_caller_id(plain, outbound) == "+18005550100"
    caller = SessionConfig(initial_messages=[], transfer_caller_id="caller")
    assert transfer_caller_id(caller, inbound) == "+14155550123"
    assert transfer_caller_id(caller, outbound) == "+14155550123"
    fixed = SessionConfig(initial_messages=[], transfer_caller_id="+15550001111")
    assert transfer_caller_id(fixed, inbound) == "+15550001111"
    assert transfer_caller_id(plain, {"Direction": "inbound", "To": "client:alice"}) is None  # left to Twilio
    assert transfer_caller_id(plain, {}) is None


def test_whisper_link_is_sealed_and_needs_a_key_and_an_address():
    from urllib.parse import parse_qs, urlsplit

    from telebridge.outbound.sealing import unseal
    from telebridge.twilio.transfer import transfer_options, whisper_link

    settings = Settings(_env_file=None, twilio_auth_token="t0k")
    endpoint = "https://tb.example.com/twilio/transfer-whisper"
    link = whisper_link(settings, endpoint, "Caller about an order")
    assert link is not None and link.startswith(endpoint + "?d=") and "order" not in link
    token = parse_qs(urlsplit(link).query)["d"][0]
    assert unseal(settings, token) == {"kind": "transfer-whisper", "say": "Caller about an order"}
    assert whisper_link(settings, None, "text") is None
    assert whisper_link(settings, endpoint, None) is None
    assert whisper_link(Settings(_env_file=None), endpoint, "text") is None  # nothing to seal with
    cfg = SessionConfig(initial_messages=[], transfer_timeout=15)
    assert transfer_options(cfg, {"Direction": "inbound", "To": "+18005550100"}, settings, endpoint) == {
        "caller_id": "+18005550100", "timeout": 15, "whisper_url": None}


@pytest.mark.parametrize("fields", [
    {"transfer_caller_id": "18005550100"}, {"transfer_caller_id": "client:bob"}, {"transfer_timeout": 4},
    {"transfer_timeout": 601}, {"transfer_whisper": "   "}, {"transfer_whisper": "bad \x07 bell"},
    {"transfer_whisper": "x" * 1001},
])
def test_transfer_settings_are_checked(fields):
    with pytest.raises(ValueError):
        SessionConfig(initial_messages=[], **fields)
