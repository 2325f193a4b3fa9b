"""A fake Cartesia server speaking the documented TTS protocol (``Cartesia-Version: 2024-11-13``), for the real
client in :mod:`telebridge.providers.tts.cartesia`.

* ``WS /tts/websocket``: contexts, ``continue``, ``flush`` → ``chunk`` … ``flush_done`` (flush ids counting from
  1 per context), ``continue: false`` → ``done``, ``{"context_id", "cancel": true}``. Contexts left idle
  (:meth:`FakeCartesia.expire_contexts`) answer further input with an ``error``.
* ``GET /voices`` and ``POST /tts/bytes`` (raw audio body).
* Auth: the ``X-API-Key`` header (or the documented ``?api_key=``, recorded so a test can assert it was never
  used); otherwise 401 (a handshake refused with 401 for the socket).

Audio is real Piper speech at the requested rate, as ``pcm_s16le`` or ``pcm_mulaw``. Fault knobs:
``statuses`` (HTTP/handshake statuses to answer before succeeding, e.g. ``[429]``), ``slow_first_byte``,
``disconnect_after_chunks``, ``malformed_after_chunks``, ``pace`` (1.0: audio sent in real time).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from fakes.speech import speech_backend
from telebridge.audio.g711 import ulaw_encode

CHUNK_SECONDS = 0.1
REQUIRED = ("model_id", "transcript", "voice", "output_format", "context_id")


def audio_bytes(pcm: Any, encoding: str) -> bytes:
    if encoding == "pcm_mulaw":
        return ulaw_encode(pcm)
    if encoding == "pcm_s16le":
        return pcm.astype("<i2").tobytes()
    raise ValueError(f"unsupported encoding {encoding}")


@dataclass
class _Context:
    text: str = ""
    flush_id: int = 1
    expired: bool = False
    cancelled: bool = False
    work: asyncio.Queue = field(default_factory=asyncio.Queue)
    worker: asyncio.Task | None = None


@dataclass
class FakeCartesia:
    api_key: str = "sk_car_test_0123456789"
    statuses: list[int] = field(default_factory=list)
    slow_first_byte: float = 0.0
    disconnect_after_chunks: int | None = None
    malformed_after_chunks: int | None = None
    pace: float = 0.0
    handshakes: list[dict[str, Any]] = field(default_factory=list)
    http_requests: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    chunks_sent: int = 0
    # (flush / final input received, first audio chunk written) per generation, time.perf_counter() seconds: the
    # fake's own time to first byte, which benchmarks subtract from what the client saw.
    first_bytes: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sockets: list[WebSocket] = []
        self._contexts: dict[str, _Context] = {}
        self.app = Starlette(routes=[
            WebSocketRoute("/tts/websocket", self._ws),
            Route("/voices", self._voices, methods=["GET"]),
            Route("/tts/bytes", self._bytes, methods=["POST"]),
        ])

    # --- helpers for tests ----------------------------------------------------------------------------------
    def expire_contexts(self) -> None:
        """Every open context expires now (as ~1 s of idleness would do)."""
        for ctx in self._contexts.values():
            ctx.expired = True

    async def drop_connections(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(1001)

    def generations(self, context_id: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages if "transcript" in m and (context_id is None or m["context_id"] == context_id)]

    def context_ids(self) -> list[str]:
        seen: list[str] = []
        for m in self.generations():
            if m["context_id"] not in seen:
                seen.append(m["context_id"])
        return seen

    # --- auth -----------------------------------------------------------------------------------------------
    def _record(self, scope_headers: Any, query: Any, path: str, sink: list[dict[str, Any]]) -> None:
        headers = {k.lower(): v for k, v in scope_headers.items() if k.lower() != "x-api-key"}
        headers["x-api-key-present"] = "x-api-key" in {k.lower() for k in scope_headers.keys()}
        sink.append({"path": path, "query": dict(query), "headers": headers})

    def _refusal(self, headers: Any, query: Any) -> Response | None:
        if self.statuses:
            status = self.statuses.pop(0)
            return JSONResponse({"error": f"fake status {status}"}, status_code=status)
        if headers.get("x-api-key") != self.api_key and query.get("api_key") != self.api_key:
            return JSONResponse({"error": "Invalid API key"}, status_code=401)
        if headers.get("cartesia-version") != "2024-11-13":
            return JSONResponse({"error": "Invalid or missing Cartesia-Version"}, status_code=400)
        return None

    # --- HTTP -----------------------------------------------------------------------------------------------
    async def _voices(self, request: Request) -> Response:
        self._record(request.headers, request.query_params, "/voices", self.http_requests)
        refusal = self._refusal(request.headers, request.query_params)
        if refusal is not None:
            return refusal
        return JSONResponse({"data": [{"id": "c2ac25f9-ecc4-4f56-9095-651354df60c0", "name": "Fake"}],
                             "has_more": False})

    async def _bytes(self, request: Request) -> Response:
        self._record(request.headers, request.query_params, "/tts/bytes", self.http_requests)
        refusal = self._refusal(request.headers, request.query_params)
        if refusal is not None:
            return refusal
        body = await request.json()
        self.http_requests[-1]["body"] = body
        fmt = body["output_format"]
        pcm = await speech_backend().synthesize(body["transcript"], int(fmt["sample_rate"]))
        return Response(audio_bytes(pcm, fmt["encoding"]), media_type="application/octet-stream")

    # --- WebSocket ------------------------------------------------------------------------------------------
    async def _ws(self, ws: WebSocket) -> None:
        self._record(ws.headers, ws.query_params, "/tts/websocket", self.handshakes)
        refusal = self._refusal(ws.headers, ws.query_params)
        if refusal is not None:
            await ws.send_denial_response(refusal)
            return
        await ws.accept()
        self._sockets.append(ws)
        lock = asyncio.Lock()
        mine: list[_Context] = []
        try:
            while True:
                msg = json.loads(await ws.receive_text())
                self.messages.append(msg)
                cid = msg.get("context_id")
                if msg.get("cancel"):
                    self.cancels.append(cid)
                    ctx = self._contexts.get(cid)
                    if ctx is not None:
                        ctx.cancelled = True
                        if ctx.worker is not None:
                            ctx.worker.cancel()
                    continue
                missing = [k for k in REQUIRED if k not in msg]
                if missing:
                    await self._send(ws, lock, {"type": "error", "done": True, "status_code": 400,
                                                "context_id": cid, "error": f"missing fields {missing}"})
                    continue
                ctx = self._contexts.get(cid)
                if ctx is not None and (ctx.expired or ctx.cancelled):
                    await self._send(ws, lock, {"type": "error", "done": True, "status_code": 400, "context_id": cid,
                                                "error": "Context has expired or was closed; use a new context_id"})
                    continue
                if ctx is None:
                    ctx = self._contexts[cid] = _Context()
                    mine.append(ctx)
                    ctx.worker = asyncio.create_task(self._generate(ws, lock, cid, ctx))
                ctx.work.put_nowait(msg)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._sockets.remove(ws)
            for ctx in mine:
                if ctx.worker is not None:
                    ctx.worker.cancel()

    async def _send(self, ws: WebSocket, lock: asyncio.Lock, payload: dict[str, Any] | str) -> None:
        async with lock:
            if isinstance(payload, str):
                await ws.send_text(payload)
            else:
                await ws.send_text(json.dumps(payload))

    async def _generate(self, ws: WebSocket, lock: asyncio.Lock, cid: str, ctx: _Context) -> None:
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            while True:
                msg = await ctx.work.get()
                ctx.text += msg["transcript"]
                if not (msg.get("flush") or not msg.get("continue")):
                    continue
                received = time.perf_counter()
                fmt = msg["output_format"]
                text, ctx.text = ctx.text.strip(), ""
                if text:
                    rate, enc = int(fmt["sample_rate"]), fmt["encoding"]
                    pcm = await speech_backend().synthesize(text, rate)
                    if self.slow_first_byte:
                        await asyncio.sleep(self.slow_first_byte)
                    step = int(rate * CHUNK_SECONDS)
                    for start in range(0, len(pcm), step):
                        await self._chunk(ws, lock, cid, ctx, audio_bytes(pcm[start:start + step], enc))
                        if start == 0:
                            self.first_bytes.append((received, time.perf_counter()))
                        if self.pace:
                            await asyncio.sleep(CHUNK_SECONDS / self.pace)
                if msg.get("flush"):
                    await self._send(ws, lock, {"type": "flush_done", "done": False, "flush_done": True,
                                                "flush_id": ctx.flush_id, "status_code": 206, "context_id": cid})
                    ctx.flush_id += 1
                if not msg.get("continue"):
                    await self._send(ws, lock, {"type": "done", "done": True, "status_code": 206, "context_id": cid})
                    return

    async def _chunk(self, ws: WebSocket, lock: asyncio.Lock, cid: str, ctx: _Context, data: bytes) -> None:
        if self.malformed_after_chunks is not None and self.chunks_sent >= self.malformed_after_chunks:
            self.malformed_after_chunks = None
            await self._send(ws, lock, '{"type": "chunk", "data": ')
            return
        if self.disconnect_after_chunks is not None and self.chunks_sent >= self.disconnect_after_chunks:
            self.disconnect_after_chunks = None
            await ws.close(1011)
            raise asyncio.CancelledError
        self.chunks_sent += 1
        await self._send(ws, lock, {"type": "chunk", "data": base64.b64encode(data).decode(), "done": False,
                                    "status_code": 206, "step_time": 12.5, "context_id": cid,
                                    "flush_id": ctx.flush_id})
