"""A fake OpenAI server speaking the real wire protocol, for the real ``openai`` client: Chat Completions plus the
audio endpoints (speech and transcriptions) and the model list.

``POST /v1/chat/completions`` answers from a script of replies, in order: with ``"stream": true`` as
``text/event-stream`` (``data: {chat.completion.chunk}`` events, then ``data: [DONE]``), otherwise as one
``chat.completion`` JSON object. Text replies stream one word per chunk; tool calls stream the way OpenAI does
it -- id and name in the first delta, the JSON arguments split over several following deltas. Every request
body is recorded, and so is every stream the client walked away from (``disconnects``).

    fake = FakeOpenAI([TextReply("Hello there."), ToolCallReply([("get_weather", {"city": "Oslo"})])])
    async with run_fake_openai(fake) as base_url:
        client = AsyncOpenAI(base_url=base_url, api_key="test")

Audio:

* ``POST /v1/audio/speech``: JSON ``{model, input, voice, response_format, speed}``; answers real Piper speech at
  24 kHz in the asked format (``pcm`` = raw s16le), streamed in ``speech_chunk_bytes`` pieces.
* ``POST /v1/audio/transcriptions``: multipart (``file``, ``model``, ``language``, ``response_format``); the
  real Whisper transcript as ``json`` / ``text`` / ``verbose_json`` (whisper-1 only, like OpenAI).
* ``GET /v1/models``.

Audio routes check ``Authorization: Bearer <api_key>`` (any key when ``api_key`` is None; chat completions are
checked only when ``api_key`` is set) and answer OpenAI's 401 error JSON otherwise. Every audio request is
recorded in ``audio_requests`` (headers without the key). Fault knobs, consumed one per request from
``speech_faults`` / ``transcription_faults`` / ``models_faults``: ``"slow_first_byte"``, ``"disconnect"``
(speech: cut the connection mid-body), ``"malformed"`` (200 with a JSON body), or an HTTP status
(``401``, ``429``, ``500``...).
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
    # --- audio -------------------------------------------------------------------------------------------
    api_key: str | None = None
    speech_faults: list[str | int] = field(default_factory=list)
    transcription_faults: list[str | int] = field(default_factory=list)
    models_faults: list[str | int] = field(default_factory=list)
    slow_first_byte: float = 3.0
    speech_chunk_bytes: int = 4800
    speech_chunk_delay: float = 0.01
    audio_requests: list[dict[str, Any]] = field(default_factory=list)
    speech_disconnects: int = 0
    speech_completed: int = 0
    # (request received, first audio chunk yielded) per /v1/audio/speech, time.perf_counter() seconds: the fake's
    # own time to first byte, which benchmarks subtract from what the client saw.
    speech_first_bytes: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue: deque[Reply] = deque(self.script)
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"]),
                                     *_audio_routes(self)])

    def add(self, *replies: Reply) -> None:
        self._queue.extend(replies)

    async def _completions(self, request: Request) -> Response:
        if self.api_key is not None:
            denied = _unauthorized(self, request)
            if denied is not None:
                return denied
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


# --- audio -------------------------------------------------------------------------------------------------

SPEECH_RATE = 24000
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
_CONTENT_TYPES = {"pcm": "application/octet-stream", "wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac",
                  "opus": "audio/ogg", "aac": "audio/aac"}
GPT4O_TRANSCRIBE_FORMATS = ("json", "text")
WHISPER_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
MODELS = ("gpt-4o-mini", "tts-1", "tts-1-hd", "gpt-4o-mini-tts", "whisper-1", "gpt-4o-transcribe",
          "gpt-4o-mini-transcribe")


def _error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
           code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status)


def _masked(key: str) -> str:
    return key[:3] + "*" * 4 + key[-4:] if len(key) > 8 else "****"


def _unauthorized(fake: FakeOpenAI, request: Request) -> Response | None:
    auth = request.headers.get("authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        return _error(401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                           "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
    key = auth[7:].strip()
    if fake.api_key is not None and key != fake.api_key:
        return _error(401, f"Incorrect API key provided: {_masked(key)}. You can find your API key at "
                           "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
    return None


def _fault_response(fault: str | int | None) -> Response | None:
    if fault is None or isinstance(fault, str) and not fault.isdigit():
        return None
    status = int(fault)
    if status == 401:
        return _error(401, "Incorrect API key provided: sk-****. You can find your API key at "
                           "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
    if status == 429:
        return _error(429, "Rate limit reached for requests. Please try again in 20ms.", type_="requests",
                      code="rate_limit_exceeded")
    if status >= 500:
        return _error(status, "The server had an error while processing your request. Sorry about that!",
                      type_="server_error")
    return _error(status, f"fake error {status}")


def _record(fake: FakeOpenAI, request: Request, body: dict[str, Any], fault: Any) -> None:
    headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
    fake.audio_requests.append({"method": request.method, "path": request.url.path, "url": str(request.url),
                                "query": dict(request.query_params), "headers": headers, "body": body,
                                "fault": fault, "authorized": "authorization" in request.headers})


def _encode(pcm: Any, fmt: str) -> bytes:
    import numpy as np

    if fmt == "pcm":
        return np.asarray(pcm, dtype="<i2").tobytes()
    if fmt == "wav":
        from telebridge.audio.wav import wav_bytes

        return wav_bytes(pcm, SPEECH_RATE)
    import io

    import av

    codec, container, rate = {"mp3": ("mp3", "mp3", 24000), "flac": ("flac", "flac", 24000),
                              "opus": ("libopus", "ogg", 48000), "aac": ("aac", "adts", 24000)}[fmt]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.asarray(pcm, dtype=np.int16).reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = SPEECH_RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _audio_routes(fake: FakeOpenAI) -> list[Route]:
    async def speech(request: Request) -> Response:
        received = time.perf_counter()
        fault = fake.speech_faults.pop(0) if fake.speech_faults else None
        try:
            body = await request.json()
        except ValueError:
            body = None
        _record(fake, request, body if isinstance(body, dict) else {"raw": True}, fault)
        denied = _unauthorized(fake, request)
        if denied is not None:
            return denied
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        for name in ("model", "input", "voice"):
            if not isinstance(body.get(name), str) or not body[name]:
                return _error(400, f"Missing required parameter: '{name}'.", param=name,
                              code="missing_required_parameter")
        if len(body["input"]) > 4096:
            return _error(400, "string too long (max 4096)", param="input", code="string_above_max_length")
        fmt = body.get("response_format", "mp3")
        if fmt not in SPEECH_FORMATS:
            return _error(400, f"Invalid value: '{fmt}'. Supported values are: {SPEECH_FORMATS}.",
                          param="response_format", code="invalid_value")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
            return _error(400, "speed must be between 0.25 and 4.0", param="speed", code="invalid_value")
        failed = _fault_response(fault)
        if failed is not None:
            return failed
        if fault == "malformed":
            return JSONResponse({"object": "speech", "note": "not audio"})
        from .speech import speech_backend

        pcm = await speech_backend().synthesize(body["input"], SPEECH_RATE)
        audio = _encode(pcm, fmt)

        async def chunks() -> AsyncIterator[bytes]:
            completed = False
            try:
                if fault == "slow_first_byte":
                    await asyncio.sleep(fake.slow_first_byte)
                step = max(1, fake.speech_chunk_bytes)
                for i, start in enumerate(range(0, len(audio), step)):
                    if fault == "disconnect" and start >= len(audio) // 2 and i > 0:
                        raise ConnectionResetError("fake: connection dropped mid-stream")
                    if i == 0:
                        fake.speech_first_bytes.append((received, time.perf_counter()))
                    yield audio[start:start + step]
                    if fake.speech_chunk_delay:
                        await asyncio.sleep(fake.speech_chunk_delay)
                completed = True
                fake.speech_completed += 1
            finally:
                if not completed:
                    fake.speech_disconnects += 1

        return StreamingResponse(chunks(), media_type=_CONTENT_TYPES[fmt])

    async def transcriptions(request: Request) -> Response:
        fault = fake.transcription_faults.pop(0) if fake.transcription_faults else None
        form = await request.form()
        upload = form.get("file")
        fields = {k: v for k, v in form.items() if k != "file"}
        audio_bytes = await upload.read() if upload is not None and hasattr(upload, "read") else b""
        fields["file"] = {"filename": getattr(upload, "filename", None),
                          "content_type": getattr(upload, "content_type", None), "size": len(audio_bytes)}
        _record(fake, request, fields, fault)
        denied = _unauthorized(fake, request)
        if denied is not None:
            return denied
        model = fields.get("model")
        if not model:
            return _error(400, "Missing required parameter: 'model'.", param="model")
        if not audio_bytes:
            return _error(400, "Missing required parameter: 'file'.", param="file")
        fmt = fields.get("response_format", "json")
        allowed = WHISPER_FORMATS if model == "whisper-1" else GPT4O_TRANSCRIBE_FORMATS
        if fmt not in allowed:
            return _error(400, f"response_format '{fmt}' is not compatible with model '{model}'. "
                               f"Use {' or '.join(allowed)}.", param="response_format", code="unsupported_value")
        failed = _fault_response(fault)
        if failed is not None:
            return failed
        if fault == "slow_first_byte":
            await asyncio.sleep(fake.slow_first_byte)
        from telebridge.audio.resample import resample_once
        from telebridge.audio.wav import WavError, read_wav

        from .speech import speech_backend

        try:
            samples, rate = read_wav(audio_bytes)
        except WavError:
            return _error(400, "The audio file could not be decoded or its format is not supported.",
                          code="unsupported_format")
        fields["file"]["sample_rate"] = rate
        audio16 = samples if rate == 16000 else resample_once(samples, rate, 16000)
        text = await speech_backend().transcribe(audio16)
        duration = len(samples) / rate
        if fmt == "text":
            return Response(text + "\n", media_type="text/plain")
        if fmt == "verbose_json":
            segment = {"id": 0, "seek": 0, "start": 0.0, "end": duration, "text": " " + text, "tokens": [],
                       "temperature": 0.0, "avg_logprob": -0.25, "compression_ratio": 1.1,
                       "no_speech_prob": 0.02}
            return JSONResponse({"task": "transcribe", "language": "english", "duration": duration, "text": text,
                                 "segments": [segment] if text else []})
        return JSONResponse({"text": text})

    async def models(request: Request) -> Response:
        fault = fake.models_faults.pop(0) if fake.models_faults else None
        _record(fake, request, {}, fault)
        denied = _unauthorized(fake, request)
        if denied is not None:
            return denied
        failed = _fault_response(fault)
        if failed is not None:
            return failed
        if fault == "slow_first_byte":
            await asyncio.sleep(fake.slow_first_byte)
        created = int(time.time())
        return JSONResponse({"object": "list", "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "system"} for m in MODELS]})

    return [Route("/v1/audio/speech", speech, methods=["POST"]),
            Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"])]


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
