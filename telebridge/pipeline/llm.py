"""One caller turn of LLM work: call the agent's ``llm_response_handler``, stream text, run tool rounds.

Theory of operation
-------------------
``respond()`` is an async generator of text deltas. Each *round* calls the handler with the history so far and
reads whatever it produced -- OpenAI ``ChatCompletionChunk`` objects, the same as dicts, plain ``str``, or a
non-streamed completion -- yielding text as it arrives and assembling streamed ``tool_calls`` deltas by index.
If a round ends with tool calls (and the round budget ``max_nested_function_calls`` allows), the tools run
concurrently, the assistant tool-call message and one ``tool`` message per call are appended to ``history``
(the caller's list, mutated in place), and the next round starts. Past the budget, tool calls are logged and
dropped: an assistant ``tool_calls`` message without answers would make the next OpenAI request invalid.

What respond() records, and what it leaves to the caller: the assistant message of each *tool round* goes into
``history`` with the text streamed in that round as ``content``. The text of the final round is only yielded;
the caller appends what the caller actually heard (it may have been cut off). A caller tracking "heard text"
should start afresh at each ``on_function_calls_executed`` event, since earlier text is already in history.

A tool never ends the call: unknown names, bad JSON, wrong arguments and exceptions all become a tool result
that tells the LLM what went wrong. Cancellation (barge-in, hang-up) propagates untouched, and the handler's
stream is closed on the way out, so an abandoned HTTP response does not keep streaming tokens nobody reads.
A consumer that may stop iterating while respond() sits at a ``yield`` (e.g. it is cancelled while awaiting
something else) should iterate it inside ``contextlib.aclosing(...)`` so that closing happens at once rather
than whenever the garbage collector finalises the generator.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from telebridge.agent import Agent

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], None]


def _get(obj: Any, key: str) -> Any:
    """Read ``key`` from a dict or an attribute of a (pydantic) object -- chunks come as either."""
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


class ToolCallAssembler:
    """Rebuilds complete tool calls from streamed deltas.

    OpenAI sends a call's ``id`` and ``function.name`` in its first delta and the JSON ``arguments`` in fragments
    after it, all tagged with the call's ``index``. Some OpenAI-compatible servers omit ``index``; then a delta
    with a new ``id`` starts a new call and one without continues the last.
    """

    def __init__(self) -> None:
        self._slots: dict[int, dict[str, str]] = {}

    def add(self, delta: Any) -> None:
        index = _get(delta, "index")
        call_id = _get(delta, "id") or ""
        if not isinstance(index, int):
            index = self._index_without_hint(call_id)
        slot = self._slots.setdefault(index, {"id": "", "name": "", "arguments": ""})
        if call_id and not slot["id"]:
            slot["id"] = call_id
        function = _get(delta, "function")
        name = _get(function, "name") or ""
        if name and name != slot["name"]:
            slot["name"] += name  # first delta, or a server that streams the name in pieces
        slot["arguments"] += _get(function, "arguments") or ""

    def _index_without_hint(self, call_id: str) -> int:
        for index, slot in self._slots.items():
            if call_id and slot["id"] == call_id:
                return index
        if call_id or not self._slots:
            return max(self._slots, default=-1) + 1
        return max(self._slots)

    def calls(self) -> list[dict[str, Any]]:
        """The assembled calls in OpenAI's ``tool_calls`` shape, in index order."""
        result = []
        for index in sorted(self._slots):
            slot = self._slots[index]
            if not slot["name"]:
                log.warning("dropping a streamed tool call without a function name (index %s)", index)
                continue
            result.append(
                {
                    "id": slot["id"] or f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": slot["name"], "arguments": slot["arguments"]},
                }
            )
        return result


def parse_chunk(item: Any, assembler: ToolCallAssembler) -> str | None:
    """Return the text in one handler output item and feed its tool-call deltas to ``assembler``.

    Returns ``None`` for items that are not chat output at all (the caller logs those once).
    """
    if isinstance(item, str):
        return item
    choices = _get(item, "choices")
    if choices is None:
        return None
    text = ""
    for choice in choices:
        if _get(choice, "index") not in (0, None):
            continue  # n > 1 completions: only the first is spoken
        delta = _get(choice, "delta")
        whole_message = delta is None
        if whole_message:
            delta = _get(choice, "message")  # a non-streamed completion: its tool calls carry no index
        if delta is None:
            continue
        text += _get(delta, "content") or _get(delta, "refusal") or ""  # a refusal is better said than silence
        for position, call_delta in enumerate(_get(delta, "tool_calls") or []):
            assembler.add({**_as_dict(call_delta), "index": position} if whole_message else call_delta)
    return text


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    return dump() if callable(dump) else dict(vars(obj))


async def _open_handler_output(agent: Agent, handler_input: dict[str, Any]) -> Any:
    """Call the handler; await it if it returned an awaitable (the usual ``return await client.create(...)``)."""
    output: Any = agent.llm_response_handler(handler_input)
    if inspect.isawaitable(output):
        output = await output
    return output


async def _items(output: Any) -> AsyncGenerator[Any, None]:
    """Iterate any accepted handler output, closing async sources however the iteration ends."""
    if output is None:
        return
    if isinstance(output, (str, Mapping)) or _get(output, "choices") is not None:
        yield output
        return
    if isinstance(output, AsyncIterable):
        iterator = aiter(output)
        try:
            async for item in iterator:
                yield item
        finally:
            await _close(iterator)
            if output is not iterator:
                await _close(output)
        return
    if isinstance(output, Iterable):
        for item in output:
            yield item
        return
    raise TypeError(
        "llm_response_handler must produce an async iterable of chat completion chunks, dicts or str; "
        f"got {type(output).__name__}"
    )


async def _close(obj: Any) -> None:
    closer = getattr(obj, "aclose", None)
    if closer is None:
        closer = getattr(obj, "close", None)
    if closer is None:
        return
    try:
        result = closer()
        if inspect.isawaitable(result):
            await result
    except Exception:  # closing is best effort; the turn is over either way
        log.debug("closing the LLM stream failed", exc_info=True)


def _tool_result_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    dump_json = getattr(result, "model_dump_json", None)
    if callable(dump_json):
        return str(dump_json())
    return json.dumps(result, default=str)


async def run_tool(
    tools: Mapping[str, Callable[..., Awaitable[Any]]], call: Mapping[str, Any], session_data: dict[str, Any]
) -> str:
    """Run one tool call and return its result text; every failure becomes a message for the LLM."""
    function = call["function"]
    name, raw_arguments = function["name"], function["arguments"] or ""
    tool = tools.get(name)
    if tool is None:
        available = ", ".join(sorted(tools)) or "none"
        return f"Error: there is no function named {name!r}. Available functions: {available}."
    try:
        arguments = json.loads(raw_arguments) if raw_arguments.strip() else {}
    except json.JSONDecodeError as exc:
        return f"Error: the arguments for {name} were not valid JSON ({exc.msg}). Call it again with a JSON object."
    if not isinstance(arguments, dict):
        return f"Error: the arguments for {name} must be a JSON object, not {type(arguments).__name__}."
    try:
        signature: inspect.Signature | None = inspect.signature(tool)
    except (TypeError, ValueError):
        signature = None
    if signature is not None and "session_data" in signature.parameters:
        arguments["session_data"] = session_data  # never what the LLM sent under that name
    if signature is not None:
        try:
            signature.bind(**arguments)
        except TypeError as exc:
            return f"Error: wrong arguments for {name}: {exc}."
    try:
        result = await tool(**arguments)
    except Exception as exc:
        log.warning("tool %s raised %s: %s", name, type(exc).__name__, exc, exc_info=True)
        return f"Error: {name} failed with {type(exc).__name__}: {exc}"
    return _tool_result_text(result)


def _emit(on_event: EventSink | None, name: str, payload: dict[str, Any]) -> None:
    if on_event is None:
        return
    try:
        on_event(name, copy.deepcopy(payload))
    except Exception:
        log.exception("event sink failed for %s", name)


async def respond(
    agent: Agent,
    history: list[dict[str, Any]],
    session_data: dict[str, Any],
    *,
    call_id: str,
    max_nested_function_calls: int,
    on_event: EventSink | None = None,
    before_tools: Callable[[], Awaitable[Any]] | None = None,
) -> AsyncGenerator[str, None]:
    """Stream the agent's reply to the latest caller turn as text deltas, running tool rounds in between.

    ``before_tools`` is awaited before a round's tools run: the call holds them until the caller's turn is
    settled (a reply to a turn ended early may yet be dropped, and a key pressed or a transfer cannot be)."""
    rounds_done = 0
    while True:
        assembler = ToolCallAssembler()
        round_text: list[str] = []
        skipped: set[str] = set()
        handler_input = {"messages": list(history), "session_data": session_data, "call_id": call_id}
        output = await _open_handler_output(agent, handler_input)
        items = _items(output)
        try:
            async for item in items:
                text = parse_chunk(item, assembler)
                if text is None:
                    if type(item).__name__ not in skipped:
                        skipped.add(type(item).__name__)
                        log.warning("[%s] ignoring llm_response_handler output of type %s", call_id, type(item))
                    continue
                if text:
                    round_text.append(text)
                    yield text
        finally:
            await items.aclose()

        calls = assembler.calls()
        if not calls:
            return
        if rounds_done >= max_nested_function_calls:
            log.warning(
                "[%s] ignoring %d tool call(s) (%s): max_nested_function_calls=%d reached for this turn",
                call_id,
                len(calls),
                ", ".join(call["function"]["name"] for call in calls),
                max_nested_function_calls,
            )
            return
        rounds_done += 1
        if before_tools is not None:
            await before_tools()
        _emit(on_event, "on_function_calls_collected", {"function_calls": calls})
        contents = await asyncio.gather(*(run_tool(agent.tools_by_name, c, session_data) for c in calls))
        history.append({"role": "assistant", "content": "".join(round_text) or None, "tool_calls": calls})
        results = []
        for call, content in zip(calls, contents):
            history.append(
                {"role": "tool", "content": content, "tool_call_id": call["id"], "name": call["function"]["name"]}
            )
            results.append(
                {"role": "tool", "content": content, "tool_call_id": call["id"], "function": call["function"]}
            )
        _emit(on_event, "on_function_calls_executed", {"results": results})


__all__ = ["respond", "run_tool", "parse_chunk", "ToolCallAssembler", "EventSink"]
