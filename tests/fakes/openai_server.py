"""A fake OpenAI Chat Completions server speaking the real wire protocol, for the real ``openai`` client.

``POST /v1/chat/completions`` answers from a script of replies, in order: with ``"stream": true`` as
``text/event-stream`` (``data: {chat.completion.chunk}`` events, then ``data: [DONE]``), otherwise as one
``chat.completion`` JSON object. Text replies stream one word per chunk; tool calls stream the way OpenAI does
it -- id and name in the first delta, the JSON arguments split over several following deltas. Every request
body is recorded, and so is every stream the client walked away from (``disconnects``).

    fake = FakeOpenAI([TextReply("Hello there."), ToolCallReply([("get_weather", {"city": "Oslo"})])])
    async with run_fake_openai(fake) as base_url:
        client = AsyncOpenAI(base_url=base_url, api_key="test")
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class TextReply:
    """Stream ``text`` one word (with its trailing space) per chunk; ``delay`` seconds between chunks."""

    text: str
    delay: float = 0.0


@dataclass
class ToolCallReply:
    """Stream tool calls: ``(name, arguments)`` pairs; arguments (a dict or a raw string) split into
    ``fragment`` -character pieces. ``text`` is streamed before the calls, as models sometimes do."""

    calls: list[tuple[str, dict[str, Any] | str]]
    text: str = ""
    fragment: int = 5


@dataclass
class ErrorReply:
    """Answer with an OpenAI-style error body and HTTP ``status``."""

    status: int = 400
    message: str = "bad request"


Reply = TextReply | ToolCallReply | ErrorReply


@dataclass
class FakeOpenAI:
    """The scriptable server state. Replies are consumed in order; when they run out, ``default`` is used."""

    script: Iterable[Reply] = ()
    default: Reply = field(default_factory=lambda: TextReply("OK."))
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnects: int = 0

    def __post_init__(self) -> None:
        self._queue: deque[Reply] = deque(self.script)
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])

    def add(self, *replies: Reply) -> None:
        self._queue.extend(replies)

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        reply = self._queue.popleft() if self._queue else self.default
        if isinstance(reply, ErrorReply):
            error = {"message": reply.message, "type": "invalid_request_error", "param": None, "code": None}
            return JSONResponse({"error": error}, status_code=reply.status)
        model = body.get("model", "gpt-4o-mini")
        if not body.get("stream"):
            return JSONResponse(_completion(reply, model))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(self._sse(reply, model, include_usage), media_type="text/event-stream")

    async def _sse(self, reply: TextReply | ToolCallReply, model: str, include_usage: bool) -> AsyncIterator[str]:
        completed = False
        try:
            for chunk in _chunks(reply, model, include_usage):
                yield f"data: {json.dumps(chunk)}\n\n"
                if isinstance(reply, TextReply) and reply.delay:
                    await asyncio.sleep(reply.delay)
            yield "data: [DONE]\n\n"
            completed = True
        finally:
            if not completed:
                self.disconnects += 1


def _envelope(model: str, completion_id: str, created: int, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": choices,
    }


def _choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _words(text: str) -> list[str]:
    pieces = text.split(" ")
    return [piece + " " for piece in pieces[:-1]] + [pieces[-1]] if text else []


def _arguments_text(arguments: dict[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _chunks(reply: TextReply | ToolCallReply, model: str, include_usage: bool) -> Iterable[dict[str, Any]]:
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:20]}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return _envelope(model, completion_id, created, [_choice(delta, finish_reason)])

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for word in _words(reply.text):
        yield chunk({"content": word})
    if isinstance(reply, ToolCallReply):
        for index, (name, arguments) in enumerate(reply.calls):
            call_id = f"call_{uuid.uuid4().hex[:24]}"
            opening = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
            yield chunk({"tool_calls": [opening]})
            text = _arguments_text(arguments)
            for start in range(0, len(text), reply.fragment):
                piece = text[start : start + reply.fragment]
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, "tool_calls")
    else:
        yield chunk({}, "stop")
    if include_usage:
        yield _envelope(model, completion_id, created, []) | {
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        }


def _completion(reply: TextReply | ToolCallReply, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
    finish_reason = "stop"
    if isinstance(reply, ToolCallReply):
        message["tool_calls"] = [
            {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": name, "arguments": _arguments_text(arguments)}}
            for name, arguments in reply.calls
        ]
        finish_reason = "tool_calls"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:20]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


@asynccontextmanager
async def run_fake_openai(fake: FakeOpenAI | None = None) -> AsyncIterator[str]:
    """Serve ``fake`` under uvicorn on 127.0.0.1 (a free port) in this event loop; yield its ``.../v1`` base URL."""
    fake = fake if fake is not None else FakeOpenAI()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(fake.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"fake-openai-{port}")
    try:
        while not server.started:
            if task.done():
                task.result()  # surfaces the startup error
                raise RuntimeError("fake OpenAI server stopped during startup")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        await task
        sock.close()


__all__ = ["FakeOpenAI", "TextReply", "ToolCallReply", "ErrorReply", "run_fake_openai"]
