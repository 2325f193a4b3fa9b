"""The simulator against a tiny fake telebridge: signatures, Twilio framing, marks, clear, timeline placement.

The fake server is independent of telebridge's own server code: it checks signatures with twilio-python's
``RequestValidator`` and the simulator's frames with the server-side ``StreamDecoder``. It plays a scripted
sequence (tones A and B with marks, a malformed frame, a wrong streamSid, a binary frame, then tone C/D with
marks and a ``clear`` while C plays) and records everything it receives, so the tests can line up what the
server did with what the simulated caller heard.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode
from telebridge.simulator import (
    AgentSegment,
    Dtmf,
    Hangup,
    NoStreamInTwiml,
    Play,
    SimulatedCall,
    StreamRejected,
    TimelineEvent,
    WebhookRejected,
    add_simulate_arguments,
    agent_segments_from_audio,
    format_transcript,
    parse_twiml,
    run_simulate,
    simulate_call,
)
from telebridge.twilio.stream import (
    ConnectedEvent,
    DtmfEvent,
    MarkEvent,
    MediaEvent,
    ProtocolIssue,
    StartEvent,
    StopEvent,
    StreamDecoder,
    encode_clear,
    encode_mark,
    encode_media,
)

TOKEN = "fake-auth-token-for-simulator-tests"
PUBLIC = "wss://public.example.com"
RATE = 8000


def _tone(freq: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


TONE_A = ulaw_encode(_tone(440, 0.2))
TONE_B = ulaw_encode(_tone(660, 0.2))
TONE_C = ulaw_encode(_tone(880, 1.0))
TONE_D = ulaw_encode(_tone(330, 1.0))


@dataclass
class Recorded:
    """What the fake server saw, in arrival order."""

    webhook_forms: list[dict[str, str]] = field(default_factory=list)
    webhook_sig_ok: list[bool] = field(default_factory=list)
    ws_sig_ok: list[bool] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)  # decoded events, in order
    issues: list[ProtocolIssue] = field(default_factory=list)
    last_ts_before_mark: dict[str, int] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


def make_app(rec: Recorded, port_holder: list[int]) -> Starlette:
    validator = RequestValidator(TOKEN)

    async def voice(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        url = f"http://127.0.0.1:{port_holder[0]}/twilio/voice"
        ok = validator.validate(url, form, request.headers.get("X-Twilio-Signature", ""))
        rec.webhook_forms.append(form)
        rec.webhook_sig_ok.append(ok)
        if not ok:
            return PlainTextResponse("bad signature", status_code=403)
        scenario = form.get("Scenario", "main")
        resp = VoiceResponse()
        if scenario == "nostream":
            resp.say("goodbye")
            resp.hangup()
        else:
            connect = Connect()
            stream = connect.stream(url=f"{PUBLIC}/stream/{scenario}")
            stream.parameter(name="tenant", value="acme")
            stream.parameter(name="lang", value="en")
            resp.append(connect)
        return Response(str(resp), media_type="application/xml")

    async def reject(ws: WebSocket) -> None:
        await ws.close(code=1008)  # before accept: HTTP 403 on the upgrade

    async def stream(ws: WebSocket) -> None:
        scenario = ws.path_params["scenario"]
        sig = ws.headers.get("x-twilio-signature", "")
        ok = validator.validate(f"{PUBLIC}/stream/{scenario}", {}, sig)
        rec.ws_sig_ok.append(ok)
        if not ok:
            await ws.close(code=1008)
            return
        await ws.accept()
        decoder = StreamDecoder()
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        last_ts = -1

        async def reader() -> None:
            nonlocal last_ts
            try:
                while True:
                    ev = decoder.receive(await ws.receive_text())
                    if isinstance(ev, ProtocolIssue):
                        rec.issues.append(ev)
                        continue
                    rec.events.append(ev)
                    if isinstance(ev, MediaEvent):
                        last_ts = ev.timestamp
                    elif isinstance(ev, MarkEvent):
                        rec.last_ts_before_mark[ev.name] = last_ts
                    await inbox.put(ev)
            except WebSocketDisconnect:
                await inbox.put(None)

        async def next_of(kind: type, pred: Any = lambda e: True) -> Any:
            while True:
                ev = await inbox.get()
                if ev is None:
                    raise WebSocketDisconnect()
                if isinstance(ev, kind) and pred(ev):
                    return ev

        task = asyncio.create_task(reader())
        try:
            start = await next_of(StartEvent)
            sid = start.stream_sid
            if scenario == "short":
                await ws.send_text(encode_media(sid, TONE_C))
                await ws.send_text(encode_mark(sid, "m"))
            elif scenario == "close":
                await ws.send_text(encode_media(sid, TONE_A))
                await next_of(MediaEvent, lambda e: e.timestamp >= 300)
                await ws.close(code=1000, reason="agent done")
                return
            else:
                await ws.send_text(encode_media(sid, TONE_A))
                await ws.send_text(encode_mark(sid, "a"))
                await ws.send_text(encode_media(sid, TONE_B))
                await ws.send_text(encode_mark(sid, "b"))
                # Three things Twilio rejects: an extra key, another stream's SID, a binary frame.
                bad = json.loads(encode_mark(sid, "x"))
                bad["mark"]["extra"] = 1
                await ws.send_text(json.dumps(bad))
                await ws.send_text(encode_mark("MZ" + "0" * 32, "y"))
                await ws.send_bytes(b"\x00\x01")
                await next_of(MarkEvent, lambda e: e.name == "a")
                await ws.send_text(encode_media(sid, TONE_C))
                await ws.send_text(encode_mark(sid, "c1"))
                await ws.send_text(encode_media(sid, TONE_D))
                await ws.send_text(encode_mark(sid, "c2"))
                # Barge in once the caller's clock shows C has been playing for a while (B ends 0.2 s after "a").
                first = await next_of(MediaEvent)
                await next_of(MediaEvent, lambda e: e.timestamp >= first.timestamp + 500)
                await ws.send_text(encode_clear(sid))
            await next_of(StopEvent)
        except WebSocketDisconnect:
            pass
        finally:
            task.cancel()
            rec.done.set()

    return Starlette(
        routes=[
            Route("/twilio/voice", voice, methods=["POST"]),
            WebSocketRoute("/stream/reject", reject),
            WebSocketRoute("/stream/{scenario}", stream),
        ]
    )


@dataclass
class Fake:
    url: str
    rec: Recorded


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rec = Recorded()
    app = make_app(rec, [port])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off", ws_ping_interval=None)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield Fake(f"http://127.0.0.1:{port}", rec)
    server.should_exit = True
    await task


def _loud_runs(heard: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.abs(heard) > 0.01)


def _ev(call: SimulatedCall, kind: str, text: str | None = None) -> list[TimelineEvent]:
    return [e for e in call.events if e.kind == kind and (text is None or e.text == text)]


async def test_full_exchange_against_fake_server(fake: Fake) -> None:
    beep = _tone(1000, 0.1, amp=0.5)
    call = await simulate_call(
        fake.url,
        script=[Play(at=0.0, audio=beep, text="beep"), Dtmf(at=0.1, digit="5"), Hangup(after_agent_quiet=0.4)],
        auth_token=TOKEN,
        extra_form={"Scenario": "main"},
        custom_parameters={"extra": "1"},
        duration=8.0,
        transcribe=False,
    )
    rec = fake.rec
    await asyncio.wait_for(rec.done.wait(), 5)

    # Signatures: webhook over the URL + form, upgrade over the advertised wss:// URL.
    assert rec.webhook_sig_ok == [True] and rec.ws_sig_ok == [True]
    form = rec.webhook_forms[0]
    assert form["CallSid"] == call.call_sid and len(call.call_sid) == 34 and call.call_sid.startswith("CA")
    assert (form["Direction"], form["CallStatus"], form["ApiVersion"]) == ("inbound", "ringing", "2010-04-01")
    assert (form["From"], form["To"], form["Scenario"]) == ("+15551230001", "+15559870002", "main")
    assert call.stream_url == f"{PUBLIC}/stream/main" and call.warnings == []

    # Every frame the simulator sent is valid Twilio, in lifecycle order, with consecutive counters.
    assert rec.issues == []
    connected, start, *rest = rec.events
    assert isinstance(connected, ConnectedEvent) and connected.sequence_number is None
    assert isinstance(start, StartEvent) and start.sequence_number == 1
    assert start.custom_parameters == {"tenant": "acme", "lang": "en", "extra": "1"}
    assert (start.call_sid, start.stream_sid) == (call.call_sid, call.stream_sid)
    assert [e.sequence_number for e in rec.events[1:]] == list(range(1, len(rec.events)))
    media = [e for e in rec.events if isinstance(e, MediaEvent)]
    assert [m.chunk for m in media] == list(range(1, len(media) + 1))
    assert [m.timestamp for m in media] == [20 * i for i in range(len(media))]
    assert isinstance(rec.events[-1], StopEvent) and rec.events[-1].call_sid == call.call_sid

    # What the caller sent: the inbound payloads are exactly the `sent` timeline, beep first, then silence.
    inbound = b"".join(m.payload for m in media)
    assert len(call.sent) == len(call.heard) == len(inbound) == 160 * len(media)
    assert inbound == ulaw_encode(call.sent)
    np.testing.assert_array_equal(call.sent[:800], ulaw_decode_float(ulaw_encode(beep)))
    assert not call.sent[800:].any()
    dtmf = [e for e in rec.events if isinstance(e, DtmfEvent)]
    assert [d.digit for d in dtmf] == ["5"]
    assert [(e.t, e.text) for e in _ev(call, "dtmf")] == [(0.1, "5")]

    # Playback: A then B contiguous from the first media-start; marks echoed when their audio ended.
    t_a = _ev(call, "media-start")[0].t
    i_a = round(t_a * RATE)
    np.testing.assert_array_equal(call.heard[i_a : i_a + 1600], ulaw_decode_float(TONE_A))
    np.testing.assert_array_equal(call.heard[i_a + 1600 : i_a + 3200], ulaw_decode_float(TONE_B))
    assert not call.heard[:i_a].any()
    assert _ev(call, "mark", "a")[0].t == pytest.approx(t_a + 0.2)
    assert _ev(call, "mark", "b")[0].t == pytest.approx(t_a + 0.4)
    # The server saw each echo right after the media frame of the tick that finished playing the audio.
    assert rec.last_ts_before_mark["a"] == round((t_a + 0.2) * 1000) - 40
    assert rec.last_ts_before_mark["b"] == round((t_a + 0.4) * 1000) - 40

    # Clear: C was cut short, D never played, both pending marks echoed together at the clear.
    (clear,) = _ev(call, "clear")
    assert "2 mark(s)" in clear.text
    c1, c2 = _ev(call, "mark", "c1"), _ev(call, "mark", "c2")
    assert len(c1) == len(c2) == 1 and c1[0].t == c2[0].t == clear.t
    names = [e.name for e in rec.events if isinstance(e, MarkEvent)]
    assert names == ["a", "b", "c1", "c2"]
    loud = _loud_runs(call.heard)
    i_c = i_a + 3200
    n_c = loud[-1] + 1 - i_c  # samples of C heard
    # The server sent clear once it saw a media timestamp 500 ms past the one following the "a" echo,
    # i.e. no earlier than the tick ending at t_a + 0.7: at least 0.3 s of C had played.
    assert 0.28 * RATE <= n_c < 1.0 * RATE
    np.testing.assert_array_equal(call.heard[i_c : i_c + n_c], ulaw_decode_float(TONE_C[:n_c]))
    assert not call.heard[i_c + n_c + 160 :].any()
    assert clear.t >= t_a + 0.7 - 1e-6

    # Strict decoding: the three bad frames were caught, nothing else.
    errs = call.protocol_errors
    assert len(errs) == 3, errs
    assert any(e.startswith("31951") and "extra" in e for e in errs)
    assert any(e.startswith("31951") and "streamSid" in e for e in errs)
    assert any(e.startswith("31950") for e in errs)

    # Segments, ending, transcript.
    (seg,) = call.agent_segments
    assert seg.start == pytest.approx(t_a) and seg.end == pytest.approx((i_c + n_c) / RATE, abs=0.02)
    assert call.ended_by == "hangup" and call.close_code == 1000
    hang = _ev(call, "hangup")[0]
    assert hang.t >= seg.end + 0.4 - 1e-6
    text = format_transcript(call)
    assert "caller: beep" in text and "caller: [presses 5]" in text and "agent: <speech" in text
    assert "agent: [clear: flushed" in text


async def test_virtual_clock_mode(fake: Fake) -> None:
    call = await simulate_call(
        fake.url,
        script=[Hangup(after_agent_quiet=0.3)],
        auth_token=TOKEN,
        extra_form={"Scenario": "short"},
        duration=300.0,
        transcribe=False,
        realtime=False,
    )
    t = _ev(call, "media-start")[0].t
    assert _ev(call, "mark", "m")[0].t == pytest.approx(t + 1.0)
    i = round(t * RATE)
    np.testing.assert_array_equal(call.heard[i : i + RATE], ulaw_decode_float(TONE_C))
    assert not call.heard[:i].any() and not call.heard[i + RATE :].any()
    assert call.ended_by == "hangup"
    assert _ev(call, "hangup")[0].t == pytest.approx(t + 1.0 + 0.3)
    assert call.protocol_errors == []


async def test_server_close_is_recorded(fake: Fake) -> None:
    call = await simulate_call(
        fake.url, auth_token=TOKEN, extra_form={"Scenario": "close"}, duration=5.0, transcribe=False
    )
    assert call.ended_by == "server"
    assert call.close_code == 1000 and call.close_reason == "agent done"
    (close,) = _ev(call, "close")
    assert close.side == "agent" and close.text == "1000 agent done"
    assert 0.3 <= close.t < 5.0
    await asyncio.wait_for(fake.rec.done.wait(), 5)
    assert not any(isinstance(e, StopEvent) for e in fake.rec.events)  # Twilio sends no stop to a closed socket


async def test_rejections(fake: Fake) -> None:
    with pytest.raises(WebhookRejected) as wh:
        await simulate_call(fake.url, auth_token="wrong-token", duration=1.0, transcribe=False)
    assert wh.value.status_code == 403
    with pytest.raises(StreamRejected) as st:
        await simulate_call(
            fake.url, auth_token=TOKEN, extra_form={"Scenario": "reject"}, duration=1.0, transcribe=False
        )
    assert st.value.status_code == 403
    with pytest.raises(NoStreamInTwiml):
        await simulate_call(
            fake.url, auth_token=TOKEN, extra_form={"Scenario": "nostream"}, duration=1.0, transcribe=False
        )


async def test_cli_without_speech(fake: Fake, tmp_path: Any) -> None:
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    out_wav = tmp_path / "heard.wav"
    args = parser.parse_args(
        ["--url", fake.url, "--auth-token", TOKEN, "--no-transcribe", "--quiet", "0.3", "--dtmf", "7@0.04",
         "--duration", "5", "--out", str(out_wav)]
    )
    # The fake server picks its scenario from the webhook form; the CLI sends the standard fields only,
    # so this call gets the "main" scenario's malformed frames and must report them with exit code 1.
    lines: list[str] = []
    code = await run_simulate(args, out=lines.append)
    assert code == 1
    text = "\n".join(lines)
    assert "caller: [presses 7]" in text and "protocol error 31950" in text
    from telebridge.audio.wav import read_wav

    heard, rate = read_wav(str(out_wav))
    assert rate == 8000 and len(heard) >= 0.9 * RATE  # A + B + 0.3 s of C + 0.3 s quiet
    i = int(np.flatnonzero(heard)[0]) - 1  # the tone starts at sin(0) = 0
    np.testing.assert_allclose(heard[i : i + 1600], ulaw_decode_float(TONE_A), atol=1e-3)


def test_parse_twiml_and_warnings() -> None:
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="ws://h/x?token=1">'
        '<Parameter name="a" value="1"/><Parameter name="b" value=""/></Stream></Connect></Response>'
    )
    target = parse_twiml(twiml)
    assert target.url == "ws://h/x?token=1" and target.parameters == {"a": "1", "b": ""}
    assert len(target.warnings) == 2
    with pytest.raises(NoStreamInTwiml, match="receive-only"):
        parse_twiml('<Response><Start><Stream url="wss://h/x"/></Start></Response>')
    with pytest.raises(NoStreamInTwiml):
        parse_twiml("<Response><Say>hi</Say></Response>")
    with pytest.raises(NoStreamInTwiml):
        parse_twiml("not xml")


def test_agent_segments_split_on_400ms_silence() -> None:
    x = np.zeros(4 * RATE, dtype=np.float32)
    x[int(0.2 * RATE) : int(1.0 * RATE)] = 0.2  # speech
    x[int(1.38 * RATE) : int(1.6 * RATE)] = 0.2  # 380 ms later: same burst
    x[int(2.0 * RATE) : int(2.5 * RATE)] = 0.2  # 400 ms later: new burst
    segs = agent_segments_from_audio(x)
    assert segs == [AgentSegment(0.2, 1.6), AgentSegment(2.0, 2.5)]
    assert agent_segments_from_audio(np.zeros(RATE, dtype=np.float32)) == []


def test_script_validation() -> None:
    with pytest.raises(ValueError):
        Dtmf(at=1.0, digit="x")
    with pytest.raises(ValueError):
        Hangup(at=-1.0)
    with pytest.raises(ValueError):
        Hangup(after_agent_quiet=0.0)
    with pytest.raises(ValueError):
        Play(at=None, audio=np.zeros((2, 2), dtype=np.float32))


async def test_say_is_synthesized_and_placed_on_the_timeline(fake: Fake) -> None:
    """Say goes through Piper at 8 kHz and starts exactly at its `at` time in the sent audio."""
    from telebridge.simulator import Say, _say_cache

    call = await simulate_call(
        fake.url,
        script=[Say(at=0.2, text="Hello there."), Hangup(at=3.0)],
        auth_token=TOKEN,
        extra_form={"Scenario": "short"},
        duration=10.0,
        transcribe=False,
        realtime=False,
    )
    speech = _say_cache["Hello there."]
    assert speech.dtype == np.float32 and 0.4 * RATE < len(speech) < 3 * RATE
    assert float(np.sqrt(np.mean(speech**2))) > 0.02
    i = int(0.2 * RATE)
    assert not call.sent[:i].any()
    np.testing.assert_array_equal(call.sent[i : i + len(speech)], ulaw_decode_float(ulaw_encode(speech)))
    assert not call.sent[i + len(speech) :].any()
    (say,) = _ev(call, "say")
    assert (say.t, say.side, say.text) == (0.2, "caller", "Hello there.")
    assert call.ended_by == "hangup" and _ev(call, "hangup")[0].t == pytest.approx(3.0)
    assert "[  0.20] caller: Hello there." in format_transcript(call)
