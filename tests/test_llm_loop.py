"""respond(): every handler output shape, tool rounds, their limits and failures, cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from fakes.openai_server import FakeOpenAI, TextReply, ToolCallReply, run_fake_openai
from telebridge.agent import Agent
from telebridge.pipeline.llm import ToolCallAssembler, respond
from telebridge.session import SessionConfig


async def configure_session(input: Any) -> SessionConfig:
    return SessionConfig(initial_messages=[])


def make_agent(handler: Callable[..., Any], tools: list[Callable[..., Any]] | None = None) -> Agent:
    return Agent(id="t", configure_session=configure_session, llm_response_handler=handler, tools=tools or [])


class Recorder:
    """Collects on_event calls, as the call pipeline's scheduler would receive them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, payload: dict[str, Any]) -> None:
        self.events.append((name, payload))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]


async def run(agent: Agent, history: list[dict[str, Any]] | None = None, *, session_data: dict[str, Any] | None = None,
              max_nested: int = 1, events: Recorder | None = None) -> str:
    history = history if history is not None else [{"role": "user", "content": "hi"}]
    parts = [
        delta
        async for delta in respond(agent, history, session_data if session_data is not None else {}, call_id="CA1",
                                   max_nested_function_calls=max_nested, on_event=events)
    ]
    assert all(isinstance(part, str) and part for part in parts)
    return "".join(parts)


def chunk(content: str | None = None, tool_calls: list[dict[str, Any]] | None = None,
          finish: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def tool_call_chunks(calls: list[tuple[str, str, str]], fragment: int = 4) -> list[dict[str, Any]]:
    """(id, name, arguments) calls streamed OpenAI-style, with the calls' argument fragments interleaved."""
    out = [chunk(tool_calls=[{"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}])
           for i, (cid, name, _) in enumerate(calls)]
    longest = max(len(arguments) for _, _, arguments in calls)
    for start in range(0, longest, fragment):
        for i, (_, _, arguments) in enumerate(calls):
            if start < len(arguments):
                out.append(chunk(tool_calls=[{"index": i, "function": {"arguments": arguments[start:start + fragment]}}]))
    return out + [chunk(finish="tool_calls")]


async def agen(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


# --- output shapes -------------------------------------------------------------------------------------------

TEXT_DICTS = [chunk(content="Hello"), chunk(content=" there."), chunk(finish="stop")]


async def handler_awaitable_async_gen(input: Any) -> Any:
    return agen(TEXT_DICTS)


async def handler_async_gen_function(input: Any) -> AsyncIterator[Any]:
    for item in TEXT_DICTS:
        yield item


async def handler_pydantic_chunks(input: Any) -> Any:
    return agen([ChatCompletionChunk.model_validate(item) for item in TEXT_DICTS])


async def handler_strings(input: Any) -> Any:
    return agen(["Hello", "", " there."])


async def handler_whole_string(input: Any) -> Any:
    return "Hello there."


async def handler_list(input: Any) -> Any:
    return ["Hello", " there."]


async def handler_completion(input: Any) -> Any:
    return ChatCompletion.model_validate({
        "id": "c", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello there."}}],
    })


async def handler_n2(input: Any) -> Any:
    second = {"index": 1, "delta": {"content": "IGNORED"}, "finish_reason": None}
    return agen([{**chunk(content="Hello there."), "choices": [chunk(content="Hello there.")["choices"][0], second]}])


@pytest.mark.parametrize(
    "handler",
    [handler_awaitable_async_gen, handler_async_gen_function, handler_pydantic_chunks, handler_strings,
     handler_whole_string, handler_list, handler_completion, handler_n2],
)
async def test_every_output_shape_yields_the_text(handler: Callable[..., Any]) -> None:
    history = [{"role": "user", "content": "hi"}]
    assert await run(make_agent(handler), history) == "Hello there."
    assert history == [{"role": "user", "content": "hi"}]  # the final text is the caller's to append


async def test_nothing_to_say_and_unknown_items() -> None:
    async def none(input: Any) -> Any:
        return None

    async def odd_items(input: Any) -> Any:
        return agen([42, {"unexpected": True}, "ok"])

    assert await run(make_agent(none)) == ""
    assert await run(make_agent(odd_items)) == "ok"


async def test_wrong_output_type_is_a_clear_error() -> None:
    async def number(input: Any) -> Any:
        return 42

    with pytest.raises(TypeError, match="must produce an async iterable.*got int"):
        await run(make_agent(number))


async def test_handler_input_has_a_copy_of_history_session_data_and_call_id() -> None:
    seen: list[dict[str, Any]] = []

    async def handler(input: Any) -> Any:
        seen.append(input)
        input["messages"].append({"role": "user", "content": "injected"})
        return "ok"

    history = [{"role": "user", "content": "hi"}]
    session_data = {"k": 1}
    await run(make_agent(handler), history, session_data=session_data)
    assert seen[0]["call_id"] == "CA1" and seen[0]["session_data"] is session_data
    assert history == [{"role": "user", "content": "hi"}]


# --- tools ---------------------------------------------------------------------------------------------------


async def test_tool_calls_assembled_from_interleaved_split_deltas() -> None:
    calls_made: list[tuple[str, dict[str, Any]]] = []

    async def get_weather(location: str, unit: str = "c") -> dict[str, Any]:
        calls_made.append(("get_weather", {"location": location, "unit": unit}))
        return {"location": location, "temp": 21, "unit": unit}

    async def get_time(timezone: str) -> str:
        calls_made.append(("get_time", {"timezone": timezone}))
        return "10:30"

    rounds: list[list[dict[str, Any]]] = []

    async def handler(input: Any) -> Any:
        rounds.append(input["messages"])
        if len(rounds) == 1:
            return agen([chunk(content="Let me check. ")] + tool_call_chunks([
                ("call_a", "get_weather", json.dumps({"location": "Oslo, Norway", "unit": "f"})),
                ("call_b", "get_time", json.dumps({"timezone": "Europe/Oslo"})),
            ]))
        return agen([chunk(content="It is 21 degrees.")])

    history: list[dict[str, Any]] = [{"role": "user", "content": "weather?"}]
    events = Recorder()
    text = await run(make_agent(handler, [get_weather, get_time]), history, events=events)

    assert text == "Let me check. It is 21 degrees."
    assert sorted(calls_made) == [("get_time", {"timezone": "Europe/Oslo"}),
                                  ("get_weather", {"location": "Oslo, Norway", "unit": "f"})]
    assert history[1] == {"role": "assistant", "content": "Let me check. ", "tool_calls": [
        {"id": "call_a", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"location": "Oslo, Norway", "unit": "f"}'}},
        {"id": "call_b", "type": "function",
         "function": {"name": "get_time", "arguments": '{"timezone": "Europe/Oslo"}'}},
    ]}
    assert history[2] == {"role": "tool", "content": '{"location": "Oslo, Norway", "temp": 21, "unit": "f"}',
                          "tool_call_id": "call_a", "name": "get_weather"}
    assert history[3] == {"role": "tool", "content": "10:30", "tool_call_id": "call_b", "name": "get_time"}
    assert len(history) == 4
    assert rounds[1] == history  # the second round saw the tool results

    assert events.names == ["on_function_calls_collected", "on_function_calls_executed"]
    assert events.events[0][1]["function_calls"] == history[1]["tool_calls"]
    results = events.events[1][1]["results"]
    assert [(r["role"], r["tool_call_id"], r["function"]["name"], r["content"]) for r in results] == [
        ("tool", "call_a", "get_weather", history[2]["content"]), ("tool", "call_b", "get_time", "10:30")]


def test_assembler_handles_servers_that_omit_the_index() -> None:
    assembler = ToolCallAssembler()
    for delta in [
        {"id": "x1", "function": {"name": "f", "arguments": '{"a":'}},
        {"function": {"arguments": " 1}"}},
        {"id": "x2", "function": {"name": "g", "arguments": "{}"}},
        {"id": "x2", "function": {"name": "g", "arguments": ""}},  # repeated id and name: same call
    ]:
        assembler.add(delta)
    assert assembler.calls() == [
        {"id": "x1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"id": "x2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    nameless = ToolCallAssembler()
    nameless.add({"index": 0, "function": {"arguments": "{}"}})
    assert nameless.calls() == []


def looping_handler(counter: list[int], name: str = "lookup") -> Callable[..., Any]:
    async def handler(input: Any) -> Any:
        counter.append(1)
        call = (f"call_{len(counter)}", name, '{"q": "x"}')
        return agen([chunk(content=f"Round {len(counter)}. ")] + tool_call_chunks([call]))

    return handler


@pytest.mark.parametrize("limit", [0, 1, 3])
async def test_tool_rounds_are_limited_by_max_nested_function_calls(limit: int) -> None:
    handler_calls: list[int] = []
    tool_calls: list[str] = []

    async def lookup(q: str) -> str:
        tool_calls.append(q)
        return "found"

    history: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    text = await run(make_agent(looping_handler(handler_calls), [lookup]), history, max_nested=limit)
    assert len(tool_calls) == limit
    assert len(handler_calls) == limit + 1
    assert text == "".join(f"Round {n}. " for n in range(1, limit + 2))  # text still reaches the caller
    assert [m["role"] for m in history] == ["user"] + ["assistant", "tool"] * limit  # no unanswered tool call


@pytest.mark.parametrize(
    ("name", "arguments", "expected"),
    [
        ("explode", '{"x": 1}', "Error: explode failed with ValueError: kaboom"),
        ("nowhere", "{}", "Error: there is no function named 'nowhere'. Available functions: explode, needs_x"),
        ("needs_x", '{"x": ', "Error: the arguments for needs_x were not valid JSON"),
        ("needs_x", "[1, 2]", "Error: the arguments for needs_x must be a JSON object, not list"),
        ("needs_x", '{"y": 1}', "Error: wrong arguments for needs_x:"),
    ],
)
async def test_tool_failures_become_results_for_the_llm(name: str, arguments: str, expected: str) -> None:
    async def explode(x: int) -> str:
        raise ValueError("kaboom")

    async def needs_x(x: int) -> int:
        return x

    seen: list[list[dict[str, Any]]] = []

    async def handler(input: Any) -> Any:
        seen.append(input["messages"])
        if len(seen) == 1:
            return agen(tool_call_chunks([("call_1", name, arguments)]))
        return agen(["Sorry, that did not work."])

    history: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    text = await run(make_agent(handler, [explode, needs_x]), history)
    assert text == "Sorry, that did not work."
    assert history[-1]["role"] == "tool" and history[-1]["content"].startswith(expected)
    assert history[-2]["content"] is None  # no text before the tool call


async def test_tools_get_session_data_only_when_they_ask_for_it() -> None:
    received: dict[str, Any] = {}

    async def remember(note: str, session_data: dict[str, Any]) -> None:
        session_data.setdefault("notes", []).append(note)
        received["session_data"] = session_data

    async def plain(note: str) -> list[str]:
        return [note.upper()]

    session_data: dict[str, Any] = {"user": "u1"}
    rounds: list[int] = []

    async def handler(input: Any) -> Any:
        rounds.append(1)
        if len(rounds) == 1:
            return agen(tool_call_chunks([
                ("c1", "remember", '{"note": "a", "session_data": {"user": "attacker"}}'),
                ("c2", "plain", '{"note": "b"}'),
            ]))
        return agen(["done"])

    history: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    await run(make_agent(handler, [remember, plain]), history, session_data=session_data)
    assert received["session_data"] is session_data and session_data == {"user": "u1", "notes": ["a"]}
    assert [m["content"] for m in history if m["role"] == "tool"] == ["null", '["B"]']


async def test_tools_wait_for_the_turn_to_be_settled_and_text_does_not() -> None:
    """A reply to a turn the end-of-turn model ended early: its words stream at once, its tools (a key press, a
    transfer) run only once the call says the turn is settled; dropped before that, nothing ran."""
    pressed: list[str] = []

    async def press(digits: str) -> str:
        pressed.append(digits)
        return "pressed"

    async def handler(input: Any) -> Any:
        if input["messages"][-1]["role"] == "tool":
            return agen(["Done."])
        return agen(["One moment. "] + tool_call_chunks([("c1", "press", '{"digits": "1"}')]))

    settled = asyncio.Event()
    history: list[dict[str, Any]] = [{"role": "user", "content": "sales"}]
    stream = respond(make_agent(handler, [press]), history, {}, call_id="CA1", max_nested_function_calls=1,
                     before_tools=settled.wait)
    assert await stream.__anext__() == "One moment. "
    waiting = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.05)
    assert not waiting.done() and pressed == []  # the text is out; the key waits
    settled.set()
    assert await waiting == "Done." and pressed == ["1"]
    await stream.aclose()

    dropped = respond(make_agent(handler, [press]), [{"role": "user", "content": "sales"}], {}, call_id="CA2",
                      max_nested_function_calls=1, before_tools=asyncio.Event().wait)
    assert await dropped.__anext__() == "One moment. "
    waiting = asyncio.ensure_future(dropped.__anext__())
    await asyncio.sleep(0.05)
    waiting.cancel()  # the caller went on: the reply is dropped
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pressed == ["1"]  # still only the first call's key


async def test_tools_run_concurrently() -> None:
    first_started = asyncio.Event()

    async def first() -> str:
        first_started.set()
        return "1"

    async def second() -> str:
        await asyncio.wait_for(first_started.wait(), timeout=5)  # only completes if first runs alongside
        return "2"

    rounds: list[int] = []

    async def handler(input: Any) -> Any:
        rounds.append(1)
        if len(rounds) == 1:
            return agen(tool_call_chunks([("c2", "second", "{}"), ("c1", "first", "")]))
        return agen(["ok"])

    history: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    await run(make_agent(handler, [first, second]), history)
    assert [m["content"] for m in history if m["role"] == "tool"] == ["2", "1"]


async def test_a_failing_event_sink_does_not_break_the_turn() -> None:
    async def noop() -> str:
        return "x"

    rounds: list[int] = []

    async def handler(input: Any) -> Any:
        rounds.append(1)
        return agen(tool_call_chunks([("c", "noop", "{}")]) if len(rounds) == 1 else ["fine"])

    def broken_sink(name: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("sink down")

    text = "".join([d async for d in respond(make_agent(handler, [noop]), [{"role": "user", "content": "x"}], {},
                                             call_id="c", max_nested_function_calls=1, on_event=broken_sink)])
    assert text == "fine"


# --- cancellation --------------------------------------------------------------------------------------------


class Tracked:
    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.first_sent = asyncio.Event()

    async def stream(self) -> AsyncIterator[str]:
        try:
            yield "first "
            self.first_sent.set()
            await asyncio.Event().wait()  # an LLM that never finishes
            yield "never"
        finally:
            self.closed.set()


@pytest.mark.parametrize("style", ["awaitable", "generator_function"])
async def test_cancelling_the_turn_closes_the_handler_stream(style: str) -> None:
    tracked = Tracked()

    async def returns_stream(input: Any) -> Any:
        return tracked.stream()

    async def is_stream(input: Any) -> AsyncIterator[str]:
        async for item in tracked.stream():
            yield item

    agent = make_agent(returns_stream if style == "awaitable" else is_stream)
    received: list[str] = []

    async def consume() -> None:
        async for delta in respond(agent, [], {}, call_id="c", max_nested_function_calls=1, on_event=None):
            received.append(delta)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(tracked.first_sent.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tracked.closed.is_set()
    assert received == ["first "]


async def test_aclose_of_respond_closes_the_handler_stream() -> None:
    tracked = Tracked()

    async def handler(input: Any) -> Any:
        return tracked.stream()

    stream = respond(make_agent(handler), [], {}, call_id="c", max_nested_function_calls=1, on_event=None)
    assert await stream.__anext__() == "first "
    await stream.aclose()
    assert tracked.closed.is_set()


async def test_cancelling_a_real_openai_stream_drops_the_http_response() -> None:
    fake = FakeOpenAI([TextReply(" ".join(["word"] * 2000), delay=0.01)])
    async with run_fake_openai(fake) as base_url:
        client = AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)

        async def handler(input: Any) -> Any:
            return await client.chat.completions.create(model="m", messages=input["messages"], stream=True)

        got_text = asyncio.Event()

        async def consume() -> None:
            async for _ in respond(make_agent(handler), [{"role": "user", "content": "hi"}], {}, call_id="c",
                                   max_nested_function_calls=1, on_event=None):
                got_text.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_text.wait(), timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(500):  # the server notices the closed connection within a few of its 10 ms chunks
            if fake.disconnects:
                break
            await asyncio.sleep(0.01)
        assert fake.disconnects == 1
        await client.close()


# --- the demo agent ------------------------------------------------------------------------------------------


@pytest.fixture
def no_llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "TELEBRIDGE_LLM_BASE_URL", "TELEBRIDGE_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("What are your opening hours?", "open Monday to Friday"),
        ("Where are you located?", "14 Harbor Street"),
        ("How much is a cleaning?", "120 dollars"),
        ("I'd like to book an appointment.", "What day would work best"),
        ("I need to cancel my appointment", "Which appointment"),
        ("I'm in a lot of pain, it's an emergency", "emergency slots"),
        ("Can I talk to a real person?", "call you back"),
        ("Thanks, bye!", "Thanks for calling Harbor Dental"),
        ("The purple submarine", 'didn\'t quite get "the purple submarine"'),
        ("", "didn't catch that"),
    ],
)
async def test_demo_scripted_replies(no_llm_env: None, said: str, expected: str) -> None:
    from telebridge.agents.demo import agent

    text = await run(agent, [{"role": "system", "content": "x"}, {"role": "user", "content": said}])
    assert expected in text


async def test_demo_books_the_day_the_caller_names(no_llm_env: None) -> None:
    from telebridge.agents.demo import agent

    session_data: dict[str, Any] = {}
    history: list[dict[str, Any]] = [{"role": "user", "content": "I want to book an appointment"}]
    history.append({"role": "assistant", "content": await run(agent, history, session_data=session_data)})
    history.append({"role": "user", "content": "Thursday would be great."})
    assert "Thursday at 10" in await run(agent, history, session_data=session_data)
    assert session_data["bookings"] == [{"day": "thursday", "time": "10"}]


async def test_demo_streams_several_chunks(no_llm_env: None) -> None:
    from telebridge.agents.demo import agent

    deltas = [d async for d in respond(agent, [{"role": "user", "content": "Where are you?"}], {}, call_id="c",
                                       max_nested_function_calls=1, on_event=None)]
    assert len(deltas) > 3


async def test_demo_uses_an_openai_compatible_llm_when_configured(
    no_llm_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from telebridge.agents.demo import agent

    fake = FakeOpenAI([ToolCallReply([("check_availability", {"day": "Tuesday"})]),
                       TextReply("Tuesday at 11 is free. Shall I book it?")])
    async with run_fake_openai(fake) as base_url:
        monkeypatch.setenv("TELEBRIDGE_LLM_BASE_URL", base_url)
        monkeypatch.setenv("TELEBRIDGE_LLM_MODEL", "local-model")
        history: list[dict[str, Any]] = [{"role": "user", "content": "Anything on Tuesday?"}]
        text = await run(agent, history, max_nested=2)
    assert text == "Tuesday at 11 is free. Shall I book it?"
    assert json.loads(history[-1]["content"]) == {"day": "tuesday", "available": True, "time": "11"}
    first, second = fake.requests
    assert first["model"] == "local-model" and first["stream"] is True
    assert {tool["function"]["name"] for tool in first["tools"]} == {"check_availability", "book_appointment"}
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "tool"]
