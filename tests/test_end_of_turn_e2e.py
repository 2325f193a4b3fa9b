"""The end-of-turn model on real calls (issue 10): a finished question is answered after the model said so, and
a caller who stops to think mid-sentence is not cut off -- with the model on and with it off."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import LiveServer, finished_call
from speechutil import with_pauses
from test_metrics import parse, scrape, value

from telebridge.simulator import Play, Say, simulate_call

AGENT = str(Path(__file__).parent / "agents" / "voice_agent.py")
NUMBER = "My number is four one five, five five five, one two three four."


@pytest.fixture(scope="module")
def eot_server():
    server = LiveServer(agent=AGENT).start()
    if server.runtime.turn_classifier is None:
        server.stop()
        pytest.skip("the end-of-turn model is not installed (the 'turn' extra)")
    yield server
    server.stop()


def user_turns(record) -> list[str]:
    return [m["content"] for m in record.history if m.get("role") == "user"]


async def _asked(url: str) -> tuple[float, float]:
    """From the server's /metrics: end-of-turn questions the model answered, and its CPU seconds."""
    response = await scrape(url)
    assert response.status_code == 200
    samples = parse(response.text)
    return (value(samples, "telebridge_end_of_turn_questions_total", outcome="answered"),
            value(samples, "telebridge_end_of_turn_cpu_seconds_total"))


async def test_a_finished_question_is_answered_on_the_models_word(eot_server, auth_token):
    answered0, cpu0 = await _asked(eot_server.url)
    call = await simulate_call(
        eot_server.url, script=[Say(at=None, text="What are your opening hours?", after_agent_quiet=0.8)],
        auth_token=auth_token, duration=20, end_when_quiet=1.5, transcribe=False)
    record = await finished_call(eot_server, call.call_sid)
    verdicts = [detail for _, kind, detail in record.metrics.events if kind == "end_of_turn"]
    assert verdicts and verdicts[-1].startswith("complete"), record.metrics.events
    assert len(user_turns(record)) == 1 and len(record.metrics.turns) == 1
    answered, cpu = await _asked(eot_server.url)  # /metrics shows what the model cost: at least this call's answers, and CPU for them
    assert answered - answered0 >= len(verdicts) and cpu > cpu0
    # How much sooner that answers is a benchmark figure (bench/latency.py), not a test's.


@pytest.mark.parametrize("model", ["on", "off"])
async def test_a_caller_who_pauses_mid_number_is_not_cut_off(eot_server, auth_token, model):
    classifier = eot_server.runtime.turn_classifier
    if model == "off":
        eot_server.runtime.turn_classifier = None
    try:
        audio = with_pauses(NUMBER, (0,), 1.2)
        call = await simulate_call(
            eot_server.url, script=[Play(at=None, audio=audio, text=NUMBER, after_agent_quiet=0.8)],
            auth_token=auth_token, duration=25, end_when_quiet=2.0, transcribe=False)
        record = await finished_call(eot_server, call.call_sid)
    finally:
        eot_server.runtime.turn_classifier = classifier
    turns = user_turns(record)
    # One turn holding the whole number: the agent waited through the pause.
    assert len(turns) == 1, turns
    # ... to its end, however Whisper writes the digits ("1234", "1-2-3-4", "1, 2, 3, 4.", "... three four.")
    heard = re.sub(r"[^0-9a-z]", "", turns[0].lower())
    assert "1234" in heard or heard.endswith("four"), turns
    assert record.metrics.count("interrupt") == 0
