"""Outbound calls end to end: the real ``twilio`` SDK places calls on the local fake of Twilio's REST API, which
runs them the way Twilio does (status callbacks, the signed TwiML request, the media stream, AMD) with a
simulated callee, against the real server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from conftest import AUTH_TOKEN, LiveServer, finished_call
from fakes.twilio_api import FakeTwilioApi, FakeTwilioServer
from speechutil import fuzzy_ratio, heard_whole
from telebridge.outbound.calls import place_call
from telebridge.simulator.callee import busy, human, no_answer, voicemail

AGENT = Path(__file__).parent / "agents" / "outbound_agent.py"
ACCOUNT = "AC" + "7" * 32
API_KEY = "test-api-key-123"
FROM = "+14155550100"

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def outbound():
    api = FakeTwilioApi(AUTH_TOKEN)
    api.transcribe_outbound = True
    fake = FakeTwilioServer(api).start()
    srv = LiveServer(agent=str(AGENT), twilio_account_sid=ACCOUNT, twilio_api_base_url=fake.url, api_key=API_KEY)
    srv.settings.public_url = srv.url  # Twilio (the fake) reaches the server at its own address
    srv.start()
    yield api, srv
    srv.stop()
    fake.stop()


# Every call the tests below dial: (number, callee, place_call options). They are placed at once by ``placed`` and
# run side by side on the fake (each on its own simulated line); each test then checks its own call. The callees
# who listen to the agent wait 4 s of its silence before hanging up (not 2-3 s): with three calls on a loaded
# machine, the next clause of a reply can take that long to synthesize.
DIALED = {
    "human": ("+14155550101", human("Hello?", hang_up_when_quiet=4.0), {"data": {"name": "Margaret"}}),
    "voicemail": ("+14155550102", voicemail(hang_up_when_quiet=4.0), {"data": {"name": "Bob"}, "amd": True}),
    "voicemail-no-message": ("+14155550103", voicemail(), {"data": {"voicemail": "no"}, "amd": True}),
    "busy": ("+14155550111", busy(), {}),
    "no-answer": ("+14155550112", no_answer(1.0), {}),
}


@pytest.fixture(scope="module")
def placed(outbound) -> dict:
    """name → the PlacedCall of each of DIALED, all placed through the real SDK before the first test runs."""
    api, srv = outbound

    async def place_all() -> dict:
        for number, callee, _ in DIALED.values():
            api.callees[number] = callee
        calls = await asyncio.gather(*(place_call(srv.settings, to=number, from_=FROM, **options)
                                       for number, _, options in DIALED.values()))
        return dict(zip(DIALED, calls))

    return asyncio.run(place_all())


def _agent_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("outbound_agent_texts", AGENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _get(srv: LiveServer, sid: str, key: str | None = API_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient() as http:
        return await http.get(f"{srv.url}/v1/calls/{sid}", headers=headers)


async def _record(srv: LiveServer, sid: str, *, until: str = "ended_reason", timeout: float = 10.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await _get(srv, sid)).json()
        if body.get(until) or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.1)


async def test_a_human_hears_a_greeting_with_the_calls_data_after_saying_hello(outbound, placed):
    api, srv = outbound
    placed = placed["human"]
    assert placed.call_sid.startswith("CA") and placed.status == "queued" and placed.to.endswith("0101")
    result = await api.wait_outbound(placed.call_sid)
    assert result.status == "completed" and result.call is not None
    call = result.call
    assert not call.protocol_errors, call.protocol_errors

    # Twilio's requests to the application: all signed and accepted, the TwiML one with outbound parameters.
    paths = [(path, status) for path, _, status in result.callbacks]
    assert ("/twilio/outbound", 200) in paths and all(status in (200, 204) for _, status in paths), paths
    twiml_form = next(form for path, form, _ in result.callbacks if path == "/twilio/outbound")
    assert twiml_form["Direction"] == "outbound-api" and twiml_form["CallStatus"] == "in-progress"
    statuses = [form["CallStatus"] for path, form, _ in result.callbacks if path == "/twilio/call-status"]
    assert statuses == ["initiated", "ringing", "in-progress", "completed"], statuses
    assert "Margaret" not in api.calls[placed.call_sid].create_form["Url"]  # the data is sealed, not in clear

    # The callee spoke first; the greeting came after their hello and used the call's data.
    hello = call.events_of("say")[0]
    greeting = call.agent_segments[0]
    assert greeting.start > hello.t + 0.3, (hello, greeting)
    expected = _agent_module().GREETING.format(name="Margaret")
    heard = await heard_whole(call)
    assert fuzzy_ratio(expected, heard) > 0.7, (heard, call.agent_segments)

    record = await finished_call(srv, placed.call_sid)
    data = record.custom_data
    assert data["Direction"] == "outbound-api" and data["CallSid"] == placed.call_sid
    assert data["To"] == "+14155550101" and data["From"] == FROM
    assert data["name"] == "Margaret" and data["custom_parameters"] == {"name": "Margaret"}
    assert not any(k.startswith("tb_") for k in data)

    body = await _record(srv, placed.call_sid)
    assert body["status"] == "completed" and body["direction"] == "outbound-api"
    assert body["ran_here"] and body["from"].endswith("0100") and "4155550100" not in body["from"]
    assert body["transcript"] and body["transcript"][0]["role"] == "assistant"
    # The agent said the greeting with the call's data (exactly, server side; what was heard is checked above).
    assert [m["content"] for m in record.history if m["role"] == "assistant"][0] == expected


async def test_voicemail_gets_the_message_after_the_beep(outbound, placed):
    api, srv = outbound
    placed = placed["voicemail"]
    assert api.calls[placed.call_sid].create_form["MachineDetection"] == "DetectMessageEnd"
    result = await api.wait_outbound(placed.call_sid)
    call = result.call
    assert call is not None and not call.protocol_errors
    beep = next(e for e in call.events if e.kind == "play" and e.text == "<beep>")
    spoken = [seg for seg in call.agent_segments if seg.end > 0.5]
    assert spoken, "the agent left a message"
    first = spoken[0]
    assert first.start >= beep.t + 0.45, (beep, first)  # nothing over the greeting or the beep
    expected = _agent_module().VOICEMAIL.format(name="Bob")
    heard = await heard_whole(call, spoken)
    assert fuzzy_ratio(expected, heard) > 0.7, (heard, spoken)
    body = await _record(srv, placed.call_sid)
    assert body["answered_by"] == "machine_end_beep" and body["ended_reason"] == "voicemail", body
    assert result.answered_by == "machine_end_beep"


async def test_voicemail_hang_up_when_the_agent_leaves_no_message(outbound, placed):
    api, srv = outbound
    placed = placed["voicemail-no-message"]
    assert api.calls[placed.call_sid].create_form["MachineDetection"] == "DetectMessageEnd"
    result = await api.wait_outbound(placed.call_sid)
    assert result.call is not None and result.call.ended_by in ("rest", "server")
    assert result.call.agent_samples_played < 8000 * 0.5, "the agent said (almost) nothing"
    body = await _record(srv, placed.call_sid)
    assert body["ended_reason"] == "answering_machine" and body["status"] == "completed", body


@pytest.mark.parametrize("status", ["busy", "no-answer"])
async def test_busy_and_no_answer_end_with_that_status(outbound, placed, status):
    api, srv = outbound
    placed = placed[status]
    result = await api.wait_outbound(placed.call_sid)
    assert result.status == status and result.call is None
    body = await _record(srv, placed.call_sid)
    assert body["status"] == status and body["ended_reason"] == status and body["answered_at"] is None, body


async def test_calls_api_authorization_validation_and_placing(outbound):
    api, srv = outbound
    good = {"to": "+14155550121", "from": FROM, "data": {"name": "Carol"}}
    api.callees["+14155550121"] = busy()
    async with httpx.AsyncClient(base_url=srv.url) as http:
        missing = await http.post("/v1/calls", json=good)
        wrong = await http.post("/v1/calls", json=good, headers={"Authorization": "Bearer nope"})
        auth = {"Authorization": f"Bearer {API_KEY}"}
        bad = await http.post("/v1/calls", json={"to": "12345", "from": FROM, "extra": 1}, headers=auth)
        not_json = await http.post("/v1/calls", content=b"{", headers=auth)
        created = await http.post("/v1/calls", json=good, headers=auth)
        unknown = await http.get("/v1/calls/CA" + "0" * 32, headers=auth)
    assert missing.status_code == 401 and wrong.status_code == 401
    assert bad.status_code == 422
    locs = {tuple(d["loc"]) for d in bad.json()["error"]["details"]}
    assert ("to",) in locs and ("extra",) in locs, locs
    assert not_json.status_code == 422
    assert created.status_code == 201, created.text
    sid = created.json()["call_sid"]
    assert created.json()["status"] == "queued"
    assert unknown.status_code == 404
    await api.wait_outbound(sid)
    body = await _record(srv, sid)
    assert body["status"] == "busy"


async def test_calls_api_is_off_without_a_key(server):
    async with httpx.AsyncClient(base_url=server.url) as http:
        post = await http.post("/v1/calls", json={"to": "+14155550121", "from": FROM})
        get = await http.get("/v1/calls/CA" + "0" * 32, headers={"Authorization": "Bearer x"})
    assert post.status_code == 404 and get.status_code == 404


async def test_forged_twiml_request_is_refused(outbound):
    _, srv = outbound
    async with httpx.AsyncClient(base_url=srv.url) as http:
        unsigned = await http.post("/twilio/outbound?d=x", data={"CallSid": "CA" + "1" * 32})
        status = await http.post("/twilio/call-status", data={"CallSid": "CA" + "1" * 32, "CallStatus": "completed"})
        amd = await http.post("/twilio/amd-status", data={"CallSid": "CA" + "1" * 32, "AnsweredBy": "human"})
    assert unsigned.status_code == status.status_code == amd.status_code == 403
