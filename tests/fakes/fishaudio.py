"""A fake Fish Audio API speaking its documented HTTP protocol, with real (Piper) speech.

* ``POST /v1/tts``: ``Authorization: Bearer <key>``; body ``application/msgpack`` or ``application/json`` (a
  ``TTSRequest``: text, reference_id, format, sample_rate, latency, normalize, chunk_length, ...); the ``model``
  header picks the backend. Answers the audio as a chunked body: ``pcm`` (raw s16le mono) or ``wav`` at the asked
  ``sample_rate`` (8000, 16000, 24000, 32000, 44100). Errors are Fish Audio's JSON ``{"message", "status"}``;
  field validation failures are 422 with ``[{loc, type, msg}]``.
* ``GET /wallet/self/api-credit``: the credential check.

Fault knobs, consumed one per request from ``faults`` (TTS) and ``check_faults``: ``"slow_first_byte"``,
``"disconnect"`` (cut the connection mid-body), ``"malformed"`` (200 with a JSON body), or an HTTP status
(``401``, ``402``, ``429``, ``500``...). Every request is recorded in ``requests`` (headers without the key).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["FakeFishAudio", "PCM_RATES"]

PCM_RATES = (8000, 16000, 24000, 32000, 44100)
FORMATS = ("wav", "pcm", "mp3", "opus")
LATENCIES = ("low", "normal", "balanced")


def _fish_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message, "status": status}, status_code=status)


def _invalid(loc: str, msg: str) -> JSONResponse:
    return JSONResponse([{"loc": [loc], "type": "value_error", "msg": msg, "in": "body"}], status_code=422)


@dataclass
class FakeFishAudio:
    api_key: str = "fish-test-key"
    faults: list[str | int] = field(default_factory=list)
    check_faults: list[str | int] = field(default_factory=list)
    slow_first_byte: float = 3.0
    chunk_bytes: int = 1600
    chunk_delay: float = 0.01
    requests: list[dict[str, Any]] = field(default_factory=list)
    disconnects: int = 0
    completed: int = 0
    # (request received, first audio chunk yielded) per /v1/tts, time.perf_counter() seconds: the fake's own time
    # to first byte, which benchmarks subtract from what the client saw.
    first_bytes: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/v1/tts", self._tts, methods=["POST"]),
                                     Route("/wallet/{user_id}/api-credit", self._credit, methods=["GET"])])

    @property
    def tts_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == "/v1/tts"]

    def _record(self, request: Request, body: Any, fault: Any) -> None:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        self.requests.append({"method": request.method, "path": request.url.path, "url": str(request.url),
                              "query": dict(request.query_params), "headers": headers, "body": body,
                              "fault": fault})

    def _denied(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] != self.api_key:
            return _fish_error(401, "Invalid Token")
        return None

    @staticmethod
    def _status_fault(fault: Any) -> Response | None:
        if isinstance(fault, int) or (isinstance(fault, str) and fault.isdigit()):
            status = int(fault)
            messages = {401: "Invalid Token", 402: "Insufficient credits", 429: "Too many requests"}
            return _fish_error(status, messages.get(status, "Internal server error"))
        return None

    async def _credit(self, request: Request) -> Response:
        fault = self.check_faults.pop(0) if self.check_faults else None
        self._record(request, None, fault)
        denied = self._denied(request) or self._status_fault(fault)
        if denied is not None:
            return denied
        return JSONResponse({"_id": "credit-1", "user_id": request.path_params["user_id"], "credit": "12.50",
                             "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z",
                             "has_phone_sha256": False, "has_free_credit": None})

    def _parse(self, content_type: str, raw: bytes) -> dict[str, Any] | None:
        try:
            if content_type == "application/msgpack":
                body = msgpack.unpackb(raw)
            elif content_type == "application/json":
                body = json.loads(raw)
            else:
                return None
        except Exception:
            return None
        return body if isinstance(body, dict) else None

    async def _tts(self, request: Request) -> Response:
        received = time.perf_counter()
        fault = self.faults.pop(0) if self.faults else None
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        body = self._parse(content_type, await request.body())
        self._record(request, body, fault)
        denied = self._denied(request)
        if denied is not None:
            return denied
        if body is None:
            return PlainTextResponse("Failed to parse request body (expected application/json or "
                                     "application/msgpack)", status_code=400)
        problem = _validate(body)
        if problem is not None:
            return problem
        failed = self._status_fault(fault)
        if failed is not None:
            return failed
        if fault == "malformed":
            return JSONResponse({"status": 200, "message": "not audio"})
        fmt = body.get("format", "mp3")
        if fmt not in ("pcm", "wav"):
            return _fish_error(400, f"fake Fish Audio produces pcm and wav only, not {fmt}")
        rate = int(body.get("sample_rate") or 44100)
        from .speech import speech_backend

        pcm = await speech_backend().synthesize(body["text"], rate)
        if fmt == "wav":
            from telebridge.audio.wav import wav_bytes

            audio = wav_bytes(pcm, rate)
        else:
            audio = np.asarray(pcm, dtype="<i2").tobytes()
        return StreamingResponse(self._chunks(audio, fault, received), media_type="audio/wav" if fmt == "wav" else
                                 "application/octet-stream")

    async def _chunks(self, audio: bytes, fault: Any, received: float | None = None) -> AsyncIterator[bytes]:
        completed = False
        try:
            if fault == "slow_first_byte":
                await asyncio.sleep(self.slow_first_byte)
            step = max(1, self.chunk_bytes)
            for i, start in enumerate(range(0, len(audio), step)):
                if fault == "disconnect" and i > 0 and start >= len(audio) // 2:
                    raise ConnectionResetError("fake: connection dropped mid-stream")
                if i == 0 and received is not None:
                    self.first_bytes.append((received, time.perf_counter()))
                yield audio[start:start + step]
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
            completed = True
            self.completed += 1
        finally:
            if not completed:
                self.disconnects += 1


def _validate(body: dict[str, Any]) -> Response | None:
    if not isinstance(body.get("text"), str) or not body["text"]:
        return _invalid("text", "field required")
    ref = body.get("reference_id")
    if ref is not None and not isinstance(ref, (str, list)):
        return _invalid("reference_id", "must be a string, a list of strings or null")
    fmt = body.get("format", "mp3")
    if fmt not in FORMATS:
        return _invalid("format", f"must be one of {FORMATS}")
    rate = body.get("sample_rate")
    if rate is not None and fmt in ("pcm", "wav") and rate not in PCM_RATES:
        return _invalid("sample_rate", f"{fmt} supports {PCM_RATES}")
    if body.get("latency", "normal") not in LATENCIES:
        return _invalid("latency", f"must be one of {LATENCIES}")
    if not isinstance(body.get("normalize", True), bool):
        return _invalid("normalize", "must be a boolean")
    chunk = body.get("chunk_length", 300)
    if not isinstance(chunk, int) or not 100 <= chunk <= 300:
        return _invalid("chunk_length", "must be between 100 and 300")
    return None
