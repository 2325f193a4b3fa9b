"""Whole phone calls against the real server on loopback, played by the simulator with real speech."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import websockets
from websockets.frames import Frame, Opcode

from conftest import LiveServer, finished_call
from speechutil import fuzzy_ratio
from telebridge.agents.demo import GREETING
from telebridge.simulator import Hangup, Say, simulate_call
from telebridge.simulator.wire import twilio_connected, twilio_media, twilio_start
from telebridge.twilio import media
from telebridge.twilio.signature import compute_signature


def wait_for_no_call_tasks(server, timeout: float = 5.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = server.call_tasks()
        if not tasks and not server.runtime.calls:
            return []
        time.sleep(0.05)
    return server.call_tasks()


@pytest.fixture(scope="module")
def asgi_server():
    """The demo agent on uvicorn's own WebSocket protocol, which offers no ``telebridge.direct`` extension: the
    media route takes its frames through ASGI ``receive()`` there (the path of any other ASGI server)."""
    srv = LiveServer(ws="websockets-sansio").start()
    yield srv
    srv.stop()


@pytest.fixture(params=["direct", "asgi"])
def either_server(request):
    """The server as it runs (frames taken where they are parsed), and on uvicorn's own protocol."""
    return request.getfixturevalue("server" if request.param == "direct" else "asgi_server")


async def test_full_call_greeting_question_answer(either_server, auth_token):
    server = either_server
    call = await simulate_call(
        server.url,
        script=[Say(at=None, text="What are your opening hours?", after_agent_quiet=0.8)],
        auth_token=auth_token,
        duration=30,
        end_when_quiet=1.5,
        transcribe=True,
    )
    assert not call.protocol_errors, call.protocol_errors
    assert len(call.agent_segments) >= 2, call.agent_segments
    greeting, *answer = call.agent_segments
    assert fuzzy_ratio(GREETING, greeting.text) > 0.8, greeting.text

    record = await finished_call(server, call.call_sid)
    said = [m["content"] for m in record.history if m["role"] == "assistant"]
    users = [m["content"] for m in record.history if m["role"] == "user"]
    assert users and fuzzy_ratio(users[0], "What are your opening hours?") > 0.7, users
    assert len(said) >= 2
    heard_answer = " ".join(seg.text for seg in answer)
    assert fuzzy_ratio(said[1], heard_answer) > 0.6, (said[1], heard_answer)
    assert "hour" in said[1].lower() or "open" in said[1].lower()
    assert record.metrics.turns, "latency of the answer was recorded"


async def test_webhook_rejects_bad_signature(server, auth_token):
    form = {"CallSid": "CA" + "0" * 32, "From": "+15551230001", "To": "+15559870002"}
    url = server.url + "/twilio/voice"
    async with httpx.AsyncClient() as client:
        missing = await client.post(url, data=form)
        wrong = await client.post(url, data=form, headers={"X-Twilio-Signature": compute_signature(url, form, "nope")})
        tampered_sig = compute_signature(url, form, auth_token)
        tampered = await client.post(url, data={**form, "From": "+15550000000"}, headers={"X-Twilio-Signature": tampered_sig})
        good = await client.post(url, data=form, headers={"X-Twilio-Signature": tampered_sig})
    assert (missing.status_code, wrong.status_code, tampered.status_code) == (403, 403, 403)
    assert good.status_code == 200 and "<Connect" in good.text and "<Stream" in good.text


async def test_media_stream_upgrade_rejects_bad_signature(server, auth_token):
    ws_url = server.url.replace("http", "ws") + "/twilio/media"
    for headers in ({}, {"X-Twilio-Signature": compute_signature(ws_url, {}, "wrong-token")}):
        with pytest.raises(websockets.exceptions.InvalidStatus) as info:
            async with websockets.connect(ws_url, additional_headers=headers):
                pass
        assert info.value.response.status_code == 403


async def test_malformed_and_out_of_order_messages_do_not_break_the_call(either_server, auth_token):
    server = either_server
    ws_url = server.url.replace("http", "ws") + "/twilio/media"
    headers = {"X-Twilio-Signature": compute_signature(ws_url, {}, auth_token)}
    sid, call_sid = "MZ" + "a" * 32, "CA" + "b" * 32
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        await ws.send(twilio_connected())
        await ws.send(twilio_media(sid, b"\xff" * 160, 1, 0, 2))  # media before start
        await ws.send("{not json")
        await ws.send(b"\x00\x01binary")
        await ws.send('{"event": "teleport"}')
        await ws.send('{"event": "media", "streamSid": "%s"}' % sid)
        await ws.send(twilio_start(sid, call_sid, "AC" + "c" * 32, {"From": "+15551230001"}, 3))
        await ws.send(twilio_start(sid, call_sid, "AC" + "c" * 32, {}, 4))  # a second start
        got_media = False
        seq = 5
        deadline = asyncio.get_running_loop().time() + 20
        while not got_media and asyncio.get_running_loop().time() < deadline:
            await ws.send(twilio_media(sid, b"\xff" * 160, seq, seq * 20, seq))
            seq += 1
            try:
                frame = await asyncio.wait_for(ws.recv(), 0.02)
            except asyncio.TimeoutError:
                continue
            got_media = '"media"' in frame
        assert got_media, "the greeting still arrives after malformed frames"


async def test_frames_sent_as_the_call_starts_all_reach_it(either_server, auth_token, monkeypatch):
    """Frames that arrive while the agent is being loaded (the media route's loop has the ``start`` in hand) wait
    behind it and reach the call, every one; none is taken before the call exists."""
    server = either_server
    prepare = media.prepare_stream_call

    async def slow_prepare(*args, **kwargs):  # an agent that takes a while to load
        await asyncio.sleep(0.5)
        return await prepare(*args, **kwargs)

    monkeypatch.setattr(media, "prepare_stream_call", slow_prepare)
    ws_url = server.url.replace("http", "ws") + "/twilio/media"
    headers = {"X-Twilio-Signature": compute_signature(ws_url, {}, auth_token)}
    sid, call_sid = "MZ" + "d" * 32, "CA" + "e" * 32
    async with websockets.connect(ws_url, additional_headers=headers, compression=None) as ws:
        # ``connected`` and ``start`` in one write (they may come in one read): the route's receiver sees the first,
        # and the second is queued behind it.
        start = twilio_start(sid, call_sid, "AC" + "c" * 32, {"From": "+15551230001"}, 1)
        ws.transport.write(b"".join(Frame(Opcode.TEXT, text.encode()).serialize(mask=True)
                                    for text in (twilio_connected(), start)))
        await asyncio.sleep(0.2)  # (the route's loop has the start in hand now, and nothing else is queued)
        for seq in range(2, 52):  # 50 frames while the agent loads
            await ws.send(twilio_media(sid, b"\xff" * 160, seq, (seq - 2) * 20, seq - 1))
        deadline = asyncio.get_running_loop().time() + 20
        fed = -1
        while asyncio.get_running_loop().time() < deadline:
            session = server.runtime.calls.get(call_sid)
            fed = session.caller_audio.fed if session is not None else -1
            if fed >= 50 * 160:
                break
            await asyncio.sleep(0.05)
        assert fed == 50 * 160, fed


async def test_hang_up_mid_reply_leaves_no_tasks(server, auth_token):
    call = await simulate_call(
        server.url,
        script=[Hangup(at=1.5)],  # during the greeting
        auth_token=auth_token,
        duration=10,
        transcribe=False,
    )
    assert call.events, "the simulator saw the call"
    leaked = await asyncio.to_thread(wait_for_no_call_tasks, server)
    assert leaked == [], leaked


async def test_ten_simultaneous_calls_all_get_answers(quick_server, auth_token):
    server = quick_server  # the short-spoken agent: ten calls' worth of real speech, in less wall time
    questions = [
        "What are your opening hours?", "Where are you located?", "How much is a cleaning?",
        "I would like to book an appointment.", "Can I talk to a person?",
    ] * 2
    calls = await asyncio.gather(*[
        simulate_call(
            server.url,
            script=[Say(at=None, text=q, after_agent_quiet=0.8)],
            auth_token=auth_token,
            duration=40,
            end_when_quiet=1.5,
            transcribe=False,
        )
        for q in questions
    ])
    for q, call in zip(questions, calls):
        record = await finished_call(server, call.call_sid)
        roles = [m["role"] for m in record.history]
        assert roles.count("assistant") >= 2, (q, record.history)
        assert roles.count("user") >= 1, (q, record.history)
        assert not call.protocol_errors
    # one shared copy of each model
    engines = server.runtime._engines
    assert len(engines) == 2, list(engines)
