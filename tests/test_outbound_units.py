"""Outbound calls without a network: sealed call data, the call registry, who speaks first and answering
machines in the turn engine (synthetic time), the beep detector, Twilio's errors, and `telebridge call`."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from twilio.base.exceptions import TwilioRestException

from telebridge.cli import main
from telebridge.outbound.calls import PlaceCallError, place_call, twilio_error
from telebridge.outbound.registry import MemoryCallRegistry
from telebridge.outbound.sealing import SealError, parameters_authentic, seal, sign_parameters, unseal
from telebridge.pipeline.beep import BeepDetector
from telebridge.pipeline.turns import CancelReply, HangUp, Interrupt, StartReply, TurnEngine, TurnParams
from telebridge.settings import Settings
from telebridge.simulator.callee import beep_tone

AUDIO = np.zeros(160, np.float32)


def settings(**kw) -> Settings:
    return Settings(_env_file=None, twilio_auth_token="tok", twilio_account_sid="AC" + "1" * 32, **kw)


# --- sealing ------------------------------------------------------------------------------------------------------
def test_sealed_data_round_trips_and_cannot_be_read_forged_or_reopened_elsewhere():
    s = settings()
    token = seal(s, {"data": {"name": "Alice", "account": "12345678"}, "amd": True})
    assert "Alice" not in token and "12345678" not in token
    assert unseal(s, token) == {"data": {"name": "Alice", "account": "12345678"}, "amd": True}
    with pytest.raises(SealError):
        unseal(s, token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    with pytest.raises(SealError):
        unseal(Settings(_env_file=None, twilio_auth_token="other"), token)
    with pytest.raises(SealError):
        unseal(s, token, max_age=-1)  # expired
    with pytest.raises(SealError, match="too large"):
        seal(s, {"data": {"x": "y" * 5000}})


def test_stream_parameters_carry_a_mac():
    s = settings()
    params = {"Direction": "outbound-api", "name": "Alice"}
    params["tb_sig"] = sign_parameters(s, params)
    assert parameters_authentic(s, params)
    assert not parameters_authentic(s, {**params, "name": "Mallory"})
    assert not parameters_authentic(s, {k: v for k, v in params.items() if k != "tb_sig"})


# --- the registry -------------------------------------------------------------------------------------------------
async def test_registry_status_only_moves_forward_and_is_bounded():
    reg = MemoryCallRegistry(limit=3)
    await reg.update("CA1", status="queued")
    await reg.update("CA1", status="in-progress")
    await reg.update("CA1", status="completed", duration=12)
    late = await reg.update("CA1", status="ringing")  # a late callback
    assert late.status == "completed" and late.duration == 12 and late.ended_at and late.answered_at
    assert [h["status"] for h in late.history] == ["in-progress", "completed"]
    for i in range(2, 6):
        await reg.update(f"CA{i}", status="queued")
    assert await reg.get("CA1") is None and await reg.get("CA5") is not None


# --- who speaks first (engine, synthetic time) ----------------------------------------------------------------------
def engine() -> TurnEngine:
    return TurnEngine(TurnParams(min_silence_duration=0.5))


def run_silence(e: TurnEngine, start: float, end: float) -> list:
    actions, t = [], start
    while t <= end + 1e-9:
        actions += e.tick(t)
        t += 0.032
    return actions


def test_outbound_greeting_waits_for_the_callees_hello_and_does_not_answer_it():
    e = engine()
    assert e.greet("Hi Alice!", 0.0, wait_for_callee=True, timeout=3.0) == []
    assert run_silence(e, 0.0, 0.4) == []
    e.speech_started(0.4)
    assert run_silence(e, 0.4, 0.9) == []  # the callee is talking
    actions = e.speech_ended(0.9, AUDIO)
    uid = next(a.utterance_id for a in actions if hasattr(a, "utterance_id"))
    replies = [a for a in run_silence(e, 1.4, 1.5) if isinstance(a, StartReply)]
    assert len(replies) == 1 and replies[0].say == "Hi Alice!" and replies[0].kind == "greeting"
    e.reply_audio_started(replies[0].turn_id, 1.6)
    e.transcript(uid, "Hello?", 1.7)  # arrives late: not a turn of its own
    e.agent_finished(replies[0].turn_id, 3.0)
    assert not [a for a in run_silence(e, 3.0, 6.0) if isinstance(a, StartReply)]


def test_outbound_greeting_after_the_timeout_when_nobody_speaks():
    e = engine()
    e.greet("Hi!", 0.0, wait_for_callee=True, timeout=3.0)
    assert run_silence(e, 0.0, 2.95) == []
    (reply,) = run_silence(e, 2.96, 3.1)
    assert isinstance(reply, StartReply) and reply.kind == "greeting"


def test_a_long_recorded_greeting_is_held_for_the_verdict_but_never_past_the_deadline():
    e = engine()
    e.greet("Hi!", 0.0, wait_for_callee=True, timeout=3.0, hold_long_greeting=True)
    e.speech_started(0.3)
    e.speech_ended(6.0, AUDIO)  # 5.7 s of "you've reached…": sounds recorded
    assert run_silence(e, 6.0, 12.9) == []
    (reply,) = run_silence(e, 13.0, 13.1)  # timeout + greeting_max_wait
    assert reply.kind == "greeting"
    h = engine()
    h.greet("Hi!", 0.0, wait_for_callee=True, timeout=3.0, hold_long_greeting=True)
    h.speech_started(0.3)
    h.speech_ended(6.0, AUDIO)
    (reply,) = h.callee_is_human(7.0)
    assert reply.kind == "greeting"


def test_inbound_greets_at_once():
    (reply,) = engine().greet("Hello!")
    assert reply.kind == "greeting"


def test_answering_machine_drops_the_greeting_and_leaves_the_message_then_hangs_up():
    e = engine()
    e.greet("Hi!", 0.0, wait_for_callee=True, timeout=3.0)
    (greeting,) = run_silence(e, 3.0, 3.1)
    e.reply_audio_started(greeting.turn_id, 3.2)
    actions = e.answering_machine(4.0, "Please call us back.")
    assert isinstance(actions[0], Interrupt) and actions[0].turn_id == greeting.turn_id
    message = next(a for a in actions if isinstance(a, StartReply))
    assert message.say == "Please call us back."
    e.reply_audio_started(message.turn_id, 4.2)
    assert e.agent_finished(message.turn_id, 7.0) == [HangUp("voicemail")]
    quiet = engine()
    quiet.greet("Hi!", 0.0, wait_for_callee=True, timeout=3.0)
    assert quiet.answering_machine(1.0, None) == [HangUp("answering_machine")]
    thinking = engine()
    (reply,) = thinking.greet("Hi!")
    assert thinking.answering_machine(0.5, None) == [CancelReply(reply.turn_id), HangUp("answering_machine")]


def test_the_message_waits_for_the_machine_to_stop_talking():
    e = engine()
    e.greet("Hi!", 0.0, wait_for_callee=True, timeout=3.0)
    e.speech_started(0.3)
    assert e.answering_machine(2.0, "Call us.") == []  # the greeting is still playing
    e.speech_ended(5.0, AUDIO)
    (message,) = [a for a in e.tick(5.1) if isinstance(a, StartReply)]
    assert message.say == "Call us."


# --- the beep detector --------------------------------------------------------------------------------------------
def feed(detector: BeepDetector, audio: np.ndarray, chunk: int = 160) -> list:
    return [b for i in range(0, len(audio), chunk) if (b := detector.push(audio[i: i + chunk])) is not None]


@pytest.mark.parametrize("freq", [440.0, 850.0, 1000.0, 1012.0, 1400.0, 2000.0])
def test_beeps_are_found_with_their_timing(freq):
    rng = np.random.default_rng(1)
    audio = np.concatenate([np.zeros(4000), beep_tone(freq, 0.5), np.zeros(4000)]).astype(np.float32)
    audio += (rng.standard_normal(len(audio)) * 10 ** (-50 / 20)).astype(np.float32)  # line noise
    (beep,) = feed(BeepDetector(), audio, chunk=97)
    assert abs(beep.start - 0.5) < 0.05 and abs(beep.end - 1.0) < 0.05 and abs(beep.frequency - freq) <= 25


def test_short_blips_noise_and_chirps_are_not_beeps():
    rng = np.random.default_rng(2)
    t = np.arange(8000) / 8000
    chirp = (0.3 * np.sin(2 * np.pi * (500 * t + 600 * t**2))).astype(np.float32)  # 500 → 1700 Hz in 1 s
    assert feed(BeepDetector(), beep_tone(1000, 0.1)) == []
    assert feed(BeepDetector(), (rng.standard_normal(16000) * 0.1).astype(np.float32)) == []
    assert feed(BeepDetector(), chirp) == []


def test_speech_is_not_a_beep():
    from telebridge.simulator.speech import say_audio

    for text in ("Hi, you've reached Sam. Please leave a message after the tone.", "Hello? Who is this?",
                 "Mmmmm, oooooh, I see, aaaah."):
        assert feed(BeepDetector(), asyncio.run(say_audio(text))) == [], text


def test_a_tone_that_never_stops_is_reported_after_max_duration():
    (beep,) = feed(BeepDetector(max_duration=1.0), beep_tone(1000, 3.0))
    assert beep.end - beep.start == pytest.approx(1.0, abs=0.05)


# --- errors -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code, kind, words", [
    (20003, "credentials", "TWILIO_AUTH_TOKEN"), (21211, "invalid_to", "To number"),
    (21212, "invalid_from", "From number"), (21215, "permission", "geographic"), (99999, "twilio", "refused"),
])
def test_twilio_errors_become_one_actionable_line(code, kind, words):
    err = twilio_error(TwilioRestException(400, "https://api/Calls.json", msg="boom\nmore", code=code),
                       to="+14155550123", from_="+14155550100")
    assert err.kind == kind and words in str(err) and "\n" not in str(err) and "4155550123" not in str(err)


async def test_place_call_refuses_before_dialling():
    with pytest.raises(PlaceCallError, match="E.164") as bad:
        await place_call(settings(public_url="https://x.example"), to="4155550123", from_="+14155550100")
    assert bad.value.kind == "invalid_number"
    with pytest.raises(PlaceCallError, match="TELEBRIDGE_PUBLIC_URL"):
        await place_call(settings(), to="+14155550123", from_="+14155550100")
    with pytest.raises(PlaceCallError, match="reserved"):
        await place_call(settings(public_url="https://x.example"), to="+14155550123", from_="+14155550100",
                         data={"To": "x"})
    with pytest.raises(PlaceCallError, match="cannot reach Twilio") as net:
        await place_call(settings(public_url="https://x.example", twilio_api_base_url="http://127.0.0.1:9"),
                         to="+14155550123", from_="+14155550100")
    assert net.value.kind == "network"


# --- telebridge call ----------------------------------------------------------------------------------------------
@pytest.fixture
def fake_twilio(monkeypatch):
    from fakes.twilio_api import FakeTwilioApi, FakeTwilioServer
    from telebridge.simulator.callee import busy

    api = FakeTwilioApi("right-token")
    api.default_callee = busy
    server = FakeTwilioServer(api).start()
    for var in ("TELEBRIDGE_API_KEY", "TWILIO_API_KEY", "TWILIO_API_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "2" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "right-token")
    monkeypatch.setenv("TELEBRIDGE_PUBLIC_URL", "https://telebridge.example")
    monkeypatch.setenv("TELEBRIDGE_TWILIO_API_BASE_URL", server.url)
    monkeypatch.chdir("/tmp")  # no .env
    yield api
    server.stop()


def one_line(capsys) -> tuple[str, str]:
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    return captured.out, captured.err


def test_cli_bad_number_is_one_line_exit_2(fake_twilio, capsys):
    assert main(["call", "--to", "4155550123", "--from", "+14155550100"]) == 2
    _, err = one_line(capsys)
    assert "E.164" in err and not fake_twilio.requests


def test_cli_bad_credentials_are_one_line_exit_1(fake_twilio, capsys, monkeypatch):
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong-token")
    assert main(["call", "--to", "+14155550123", "--from", "+14155550100"]) == 1
    _, err = one_line(capsys)
    assert "20003" in err and "credentials" in err


def test_cli_bad_data_is_one_line_exit_2(fake_twilio, capsys):
    assert main(["call", "--to", "+14155550123", "--from", "+14155550100", "--data", "novalue"]) == 2
    one_line(capsys)


def test_cli_prints_the_sid_and_follows_the_call(fake_twilio, capsys):
    code = main(["call", "--to", "+14155550123", "--from", "+14155550100", "--data", "name=Al", "--wait"])
    captured = capsys.readouterr()
    sid, summary = captured.out.splitlines()[:2]
    assert sid.startswith("CA") and summary.startswith("status=busy")
    assert code == 1  # the call did not complete
    (create,) = [r for r in fake_twilio.requests if r.path.endswith("/Calls.json")]
    assert create.form["StatusCallback"] == "https://telebridge.example/twilio/call-status"
    assert create.form["Url"].startswith("https://telebridge.example/twilio/outbound?d=")
