"""Turn-taking on a simulated phone line, end to end: the real server, real speech at 8 kHz μ-law, the simulator
playing Twilio (and a local fake of Twilio's REST API for hang-ups and transfers).

The scenarios themselves live in ``scenariolib.py`` (``bench/scenarios.py`` runs the same ones and prints the
latency table). They run once per module, each group's calls side by side to keep the suite's wall time down;
every test below then asserts one scenario's checks. No timing is asserted here: latencies are the bench's job.
"""

from __future__ import annotations

import asyncio

import pytest

from conftest import AUTH_TOKEN, LiveServer
from fakes.twilio_api import FakeTwilioApi, FakeTwilioServer
from scenario_echo import ECHO_SUITE
from scenariolib import AGENT_FILE, Context, ScenarioResult, run_all


@pytest.fixture(scope="module")
def results() -> dict[str, ScenarioResult]:
    api = FakeTwilioApi(AUTH_TOKEN)
    fake = FakeTwilioServer(api).start()
    server = LiveServer(agent=str(AGENT_FILE), twilio_api_base_url=fake.url).start()
    try:
        done = asyncio.run(run_all(Context(server, AUTH_TOKEN, api), concurrent=True))
    finally:
        server.stop()
        fake.stop()
    return {r.name: r for r in done}


@pytest.mark.parametrize("name", [
    "1-interruption", "1b-agents-words", "2-backchannel", "3-echo-200ms", "4-line-noise", "5-cough", "6-mid-sentence",
    "7a-dtmf", "7b-silence", "7c-max-duration", "7d-end-call", "7e-transfer",
])
def test_scenario(results, name):
    result = results[name]
    assert result.passed, "\n".join(result.failures())


@pytest.mark.parametrize("name", [c.name for c in ECHO_SUITE] + ["double-talk-12dB-250ms-uh-huh"])
def test_echo_that_comes_and_goes(results, name):
    """Echo appearing on a later reply (not with the greeting), changing, going; a caller's "uh-huh" over a loud
    echo that must not interrupt, then their real interruption over it, which must."""
    result = results[name]
    assert result.passed, "\n".join(result.failures())


def test_no_false_interruptions_in_scenarios_2_to_4(results):
    assert sum(results[n].false_interruptions for n in ("2-backchannel", "3-echo-200ms", "4-line-noise")) == 0
