"""The agent presses keys and transfers with a whisper, end to end: the real server (tests/agents/ivr_agent.py),
the simulator playing Twilio and a phone menu, and the local fake of Twilio's REST API (which also plays the
transfer target answering and asks for the whisper, signed, as Twilio does)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from conftest import AUTH_TOKEN, Background, LiveServer, finished_call
from fakes.twilio_api import FakeTwilioApi, FakeTwilioServer
from telebridge.simulator import Hangup, Say, simulate_call
from telebridge.twilio.signature import compute_signature
from telebridge.twilio.transfer import WHISPER_PATH

AGENT = Path(__file__).parent / "agents" / "ivr_agent.py"
WHISPER = "Incoming transfer from the Acme line: <priority> caller & co."
TO_NUMBER = "+15559870002"  # the simulated call's Twilio number (its To)

pytestmark = pytest.mark.asyncio


MENU = [
    Say(at=0.5, text="Welcome to Acme. For sales, press one."),
    Say(at=None, text="You have reached sales. For new orders, press two.", after_agent_quiet=0.8),
    Hangup(after_agent_quiet=1.5),
]
ASK_FOR_A_PERSON = [Say(at=0.5, text="Hello, can I speak to a person please?")]


@pytest.fixture(scope="module")
def env():
    api = FakeTwilioApi(AUTH_TOKEN)
    fake = FakeTwilioServer(api).start()
    srv = LiveServer(agent=str(AGENT), twilio_api_base_url=fake.url).start()
    yield api, srv
    srv.stop()
    fake.stop()


@pytest.fixture(scope="module")
def calls(env):
    """Both calls, placed at once (each test checks its own: the menu call, then the transfer)."""
    api, srv = env
    background = Background()
    yield {name: background.start(simulate_call(srv.url, script=script, auth_token=AUTH_TOKEN, duration=duration,
                                                transcribe=False, twilio_api=api, to_number=TO_NUMBER))
           for name, script, duration in (("menu", MENU, 30), ("transfer", ASK_FOR_A_PERSON, 20))}
    background.close()


async def test_agent_navigates_a_phone_menu_with_keypad_tones(env, calls):
    api, srv = env
    call = await Background.result(calls["menu"])
    assert not call.protocol_errors, call.protocol_errors
    assert call.agent_dtmf == "12", call.events  # the menu heard 1, then 2, in the agent's audio
    one, two = (e for e in call.events if e.side == "agent" and e.kind == "dtmf")
    second_prompt = call.events_of("say")[1]
    assert one.t < second_prompt.t < two.t, (one, second_prompt, two)
    assert call.ended_by == "hangup" and call.redirect_twiml is None  # the stream (and conversation) stayed up
    assert api.requests_for(call.call_sid) == []  # no REST update: nothing touched the call's TwiML

    record = await finished_call(srv, call.call_sid)
    sent = [e for e in record.metrics.events if e[1] == "send_dtmf"]
    assert [e[2] for e in sent] == ["1", "2"], record.metrics.events
    results = [m["content"] for m in record.history if m["role"] == "tool"]
    assert len(results) == 2 and results[0].startswith("Pressed 1 ") and results[1].startswith("Pressed 2 ")
    assert record.keypad.sent == ["1", "2"]
    assert not [e for e in record.metrics.events if e[1] == "dtmf"]  # nothing mistaken for the caller's keys


async def test_transfer_dials_with_caller_id_timeout_and_a_signed_whisper(env, calls):
    api, srv = env
    call = await Background.result(calls["transfer"])
    assert call.ended_by == "rest", call.ended_by
    (update,) = api.requests_for(call.call_sid)
    twiml = update.form["Twiml"]
    assert twiml == call.redirect_twiml == api.calls[call.call_sid].twiml
    match = re.search(r'url="([^"]+)"', twiml)
    assert match, twiml
    url = match.group(1).replace("&amp;", "&")
    endpoint = f"http://127.0.0.1:{srv.port}{WHISPER_PATH}"
    token = url.removeprefix(endpoint + "?d=")
    assert url.startswith(endpoint + "?d=") and re.fullmatch(r"[A-Za-z0-9_%-]+", token), url
    assert twiml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f'<Dial callerId="{TO_NUMBER}" timeout="20"><Number method="POST" url="{url}">+15557654321</Number></Dial>'
        "</Response>"
    )
    assert "Acme" not in twiml and quote("Acme") not in twiml  # the whisper text is sealed, not in the URL

    # Twilio (the fake) asked for the whisper once the target answered, signed: the text, XML-escaped.
    req = await api.wait_dial_url(call.call_sid)
    assert req.status == 200, (req.status, req.body)
    assert req.form["ParentCallSid"] == call.call_sid and req.form["From"] == TO_NUMBER
    assert req.body == ('<?xml version="1.0" encoding="UTF-8"?><Response>'
                        "<Say>Incoming transfer from the Acme line: &lt;priority&gt; caller &amp; co.</Say></Response>")

    # The same request without Twilio's signature, or with a wrong one, is refused.
    async with httpx.AsyncClient() as http:
        unsigned = await http.post(url, data=req.form)
        forged = await http.post(url, data=req.form, headers={"X-Twilio-Signature": compute_signature(
            url, req.form, "not-the-token")})
        tampered_url = url[:-4] + "AAAA"
        tampered = await http.post(tampered_url, data=req.form, headers={
            "X-Twilio-Signature": compute_signature(tampered_url, req.form, AUTH_TOKEN)})
    assert unsigned.status_code == 403 and forged.status_code == 403
    assert tampered.status_code == 200 and "<Say>" not in tampered.text  # a token that does not open: no whisper

    record = await finished_call(srv, call.call_sid)
    assert record.ended_reason == "transfer_call"
