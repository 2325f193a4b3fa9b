"""A Jay agent file, import line changed, runs on telebridge: loaded, configured, and answering with a tool
round through the real ``openai`` client against a fake OpenAI server speaking the real wire protocol."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import pytest

from fakes.openai_server import FakeOpenAI, TextReply, ToolCallReply, run_fake_openai
from telebridge.agent import EVENT_HANDLERS, Agent, configure, load_agent
from telebridge.config import STT, TTS, VAD
from telebridge.pipeline.llm import respond

JAY_FILE = Path(__file__).parent / "fixtures" / "jay_agent.py"
JAY_NAMES = {"Agent", "SessionConfig", "ConfigureSessionInput", "LLMResponseHandlerInput", "VAD", "STT", "TTS"}


@pytest.fixture
def jay_agent(monkeypatch: pytest.MonkeyPatch) -> Agent:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    return load_agent(str(JAY_FILE))


def test_the_file_touches_telebridge_only_through_jay_names() -> None:
    tree = ast.parse(JAY_FILE.read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    ours = [node for node in imports if "telebridge" in ast.unparse(node)]
    assert len(ours) == 1 and isinstance(ours[0], ast.ImportFrom) and ours[0].module == "telebridge"
    assert {alias.name for alias in ours[0].names} <= JAY_NAMES


async def test_configure_reads_custom_data_and_defaults_local_speech(jay_agent: Agent) -> None:
    assert jay_agent.id == "weather-agent"
    assert all(jay_agent.handler(name) is not None for name in EVENT_HANDLERS)
    cfg = await configure(jay_agent, {"my_user_timezone": "Europe/Oslo"})
    assert cfg.session_data == {"my_user_id": "test-12345", "my_user_timezone": "Europe/Oslo"}
    assert cfg.vad == VAD.Silero() and cfg.stt == STT.Whisper() and cfg.tts == TTS.Piper()
    assert cfg.first_message == "Hello! How can I help you today?"
    assert (cfg.interrupt_time_threshold, cfg.max_nested_function_calls) == (0.5, 1)


async def test_a_turn_with_one_tool_round(
    jay_agent: Agent, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = await configure(jay_agent, {"my_user_timezone": "Europe/Oslo"})
    history: list[dict[str, Any]] = [dict(m) for m in cfg.initial_messages]
    history.append({"role": "user", "content": "What's the weather in Paris?"})
    fake = FakeOpenAI([
        ToolCallReply([("get_weather", {"location": "Paris, France"})], fragment=3),
        TextReply("It is sunny and 24 degrees in Paris."),
    ])
    handled: list[tuple[str, dict[str, Any]]] = []
    pending: list[asyncio.Task[Any]] = []

    def on_event(name: str, payload: dict[str, Any]) -> None:
        """What the call pipeline does: schedule the agent's handler, with session_data added."""
        handled.append((name, payload))
        handler = jay_agent.handler(name)
        assert handler is not None
        pending.append(asyncio.create_task(handler({**payload, "session_data": cfg.session_data})))

    async with run_fake_openai(fake) as base_url:
        monkeypatch.setenv("OPENAI_BASE_URL", base_url)
        deltas = [
            delta
            async for delta in respond(jay_agent, history, cfg.session_data, call_id="CA123",
                                       max_nested_function_calls=cfg.max_nested_function_calls, on_event=on_event)
        ]
        await asyncio.gather(*pending)

    assert "".join(deltas) == "It is sunny and 24 degrees in Paris."
    assert len(deltas) > 1  # streamed, not buffered

    assistant, tool = history[2], history[3]
    assert assistant["role"] == "assistant" and assistant["content"] is None
    [call] = assistant["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"location": "Paris, France"}'}
    assert call["id"].startswith("call_")
    assert tool == {"role": "tool", "content": "The weather in Paris, France is sunny and 24 degrees Celsius.",
                    "tool_call_id": call["id"], "name": "get_weather"}
    assert len(history) == 4  # the final answer is appended by the caller, once heard

    assert [name for name, _ in handled] == ["on_function_calls_collected", "on_function_calls_executed"]
    assert handled[0][1]["function_calls"] == [call]
    assert handled[1][1]["results"][0]["content"] == tool["content"]

    first, second = fake.requests
    assert first["model"] == "gpt-4o" and first["stream"] is True
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool"]
    assert second["messages"][3]["tool_call_id"] == call["id"]

    printed = capsys.readouterr().out
    assert "Responding to user test-12345" in printed
    assert "Getting the weather for Paris, France" in printed
    assert "Function calls collected: " in printed and "Function calls executed: " in printed
