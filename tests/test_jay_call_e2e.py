"""A Jay agent file (import line changed) answering a phone call, with its OpenAI LLM served by a local fake
that speaks OpenAI's real streaming wire protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import LiveServer, finished_call
from fakes.openai_server import FakeOpenAI, TextReply, ToolCallReply, run_fake_openai
from speechutil import fuzzy_ratio
from telebridge.simulator import Say, simulate_call

JAY_AGENT = Path(__file__).parent / "fixtures" / "jay_agent.py"
ANSWER = "It is sunny and twenty four degrees in Paris today."


@pytest.fixture()
def jay_server():
    srv = LiveServer(agent=str(JAY_AGENT)).start()
    yield srv
    srv.stop()


async def test_jay_agent_file_runs_a_call_with_tools(jay_server, auth_token, monkeypatch):
    fake = FakeOpenAI([ToolCallReply([("get_weather", {"location": "Paris, France"})]), TextReply(ANSWER)])
    async with run_fake_openai(fake) as base_url:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
        monkeypatch.setenv("OPENAI_BASE_URL", base_url)
        call = await simulate_call(
            jay_server.url,
            script=[Say(at=None, text="What is the weather like in Paris?", after_agent_quiet=0.8)],
            auth_token=auth_token,
            custom_parameters={"my_user_timezone": "Europe/Paris"},
            duration=30,
            end_when_quiet=1.5,
            transcribe=True,
        )
    record = await finished_call(jay_server, call.call_sid)
    assert record.session_data["my_user_timezone"] == "Europe/Paris"
    roles = [m["role"] for m in record.history]
    assert roles[:2] == ["system", "assistant"], record.history  # system prompt, then the first_message
    tool_call = next(m for m in record.history if m.get("tool_calls"))
    assert tool_call["tool_calls"][0]["function"]["name"] == "get_weather"
    tool_result = next(m for m in record.history if m["role"] == "tool")
    assert "sunny" in tool_result["content"]
    assert record.history[-1] == {"role": "assistant", "content": ANSWER}
    # The LLM saw the tool result on its second request.
    assert len(fake.requests) == 2 and any(m["role"] == "tool" for m in fake.requests[1]["messages"])
    heard = " ".join(seg.text for seg in call.agent_segments[1:])
    assert fuzzy_ratio(ANSWER, heard) > 0.6, heard
    assert {"on_function_calls_collected", "on_function_calls_executed", "on_agent_message_added"} <= set(record.events.fired)
