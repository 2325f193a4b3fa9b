"""A fake ElevenLabs speaking the documented wire protocol, with real Piper audio.

* ``WS /v1/text-to-speech/{voice_id}/multi-stream-input`` (and the single-context ``stream-input``): the key in
  the ``xi-api-key`` header; contexts opened by ``{"text": " ", "context_id"}``, text buffered until
  ``flush``, generation continuing after ``close_context``, ``{"audio", "alignment", "normalizedAlignment",
  "contextId"}`` replies (several per sentence) and ``{"isFinal": true, "contextId"}`` once a closed context's
  audio is out. At most 5 open contexts (the 6th: an error message and close 1008). Audio in the asked
  ``output_format``: ``ulaw_8000``, ``pcm_8000/16000/22050/24000/44100``, ``mp3_*`` (PyAV).
* ``GET /v1/user``, ``POST /v1/text-to-speech/{voice_id}/stream`` (REST), ``POST /v1/voices/add`` (instant
  voice cloning: multipart ``name`` + ``files``).

Bad key: REST answers 401 ``{"detail": {"status": "invalid_api_key", ...}}``; the socket sends an error message
and closes 1008 (``auth_style="handshake"`` refuses the handshake with 403 instead). Fault knobs: ``statuses``
(HTTP statuses answered first, REST and handshakes: e.g. [429] then success), ``slow_first_byte`` (seconds
before a context's first audio, for the first ``slow_times`` contexts), ``drop_after_chunks`` (close the socket
after that many audio messages), ``malformed`` (send a non-JSON frame instead of the first audio),
``chunk_delay`` (seconds between audio messages). Everything received is recorded, the key never.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from fakes.speech import speech_backend
from telebridge.audio.g711 import ulaw_encode

RATES = {"ulaw_8000": 8000, "pcm_8000": 8000, "pcm_16000": 16000, "pcm_22050": 22050, "pcm_24000": 24000,
         "pcm_44100": 44100}
INVALID_KEY = {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}


def encode_audio(pcm: np.ndarray, fmt: str) -> bytes:
    if fmt.startswith("ulaw"):
        return ulaw_encode(pcm)
    if fmt.startswith("pcm"):
        return pcm.astype("<i2").tobytes()
    if fmt.startswith("mp3"):
        import av

        rate = int(fmt.split("_")[1])
        buf = io.BytesIO()
        with av.open(buf, mode="w", format="mp3") as out:
            stream = out.add_stream("libmp3lame", rate=rate)
            stream.layout = "mono"
            frame = av.AudioFrame.from_ndarray(pcm.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        return buf.getvalue()
    raise ValueError(f"unsupported output_format {fmt}")


def fmt_rate(fmt: str) -> int:
    return RATES.get(fmt) or int(fmt.split("_")[1])


@dataclass
class FakeElevenLabs:
    api_key: str = "el-test-key-0123456789"
    auth_style: str = "message"  # or "handshake"
    statuses: list[int] = field(default_factory=list)
    slow_first_byte: float = 0.0
    slow_times: int = 1
    drop_after_chunks: int | None = None
    malformed: bool = False
    chunk_delay: float = 0.0
    pieces: int = 4
    # recorded
    requests: list[dict[str, Any]] = field(default_factory=list)
    sockets: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    voices_added: list[dict[str, Any]] = field(default_factory=list)
    errors_sent: list[str] = field(default_factory=list)
    # (flush received, first audio message written) per multi-stream-input generation, time.perf_counter()
    # seconds: the fake's own time to first byte, which benchmarks subtract from what the client saw.
    first_bytes: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._contexts_started = 0
        ws_routes = [WebSocketRoute("/v1/text-to-speech/{voice_id}/multi-stream-input", self._multi),
                     WebSocketRoute("/v1/text-to-speech/{voice_id}/stream-input", self._single)]
        http_routes = [Route("/v1/user", self._user, methods=["GET"]),
                       Route("/v1/text-to-speech/{voice_id}/stream", self._rest_tts, methods=["POST"]),
                       Route("/v1/voices/add", self._add_voice, methods=["POST"])]
        self.app = Starlette(routes=ws_routes + http_routes)

    # --- helpers --------------------------------------------------------------------------------------------
    def _record(self, kind: str, path: str, query: dict[str, str], headers: Any, **extra: Any) -> dict[str, Any]:
        entry = {"kind": kind, "path": path, "query": dict(query),
                 "headers": {k: v for k, v in headers.items() if k.lower() != "xi-api-key"},
                 "key_ok": headers.get("xi-api-key") == self.api_key, **extra}
        (self.sockets if kind == "ws" else self.requests).append(entry)
        return entry

    def _fault_status(self) -> int | None:
        return self.statuses.pop(0) if self.statuses else None

    async def sentence_audio(self, text: str, fmt: str) -> list[tuple[bytes, list[str]]]:
        """Piper speech of ``text`` in ``fmt``, split in ``pieces`` messages with each its share of characters."""
        rate = fmt_rate(fmt)
        pcm = await speech_backend().synthesize(text, 22050 if fmt.startswith("mp3") else rate)
        n = max(1, min(self.pieces, len(text)))
        out = []
        for i in range(n):
            a, b = len(pcm) * i // n, len(pcm) * (i + 1) // n
            ca, cb = len(text) * i // n, len(text) * (i + 1) // n
            out.append((pcm[a:b], list(text[ca:cb])))
        if fmt.startswith("mp3"):  # one mp3 stream, cut into byte slices (as a real stream arrives)
            data = encode_audio(pcm, fmt)
            return [(data[len(data) * i // n: len(data) * (i + 1) // n], chars) for i, (_, chars) in enumerate(out)]
        return [(encode_audio(piece, fmt), chars) for piece, chars in out]

    @staticmethod
    def _alignment(chars: list[str]) -> dict[str, Any]:
        return {"chars": chars, "charStartTimesMs": [i * 60 for i in range(len(chars))],
                "charDurationsMs": [60] * len(chars)}

    # --- REST -----------------------------------------------------------------------------------------------
    async def _user(self, request: Request) -> Response:
        self._record("http", request.url.path, request.query_params, request.headers)
        if request.headers.get("xi-api-key") != self.api_key:
            return JSONResponse(INVALID_KEY, status_code=401)
        if (status := self._fault_status()) is not None:
            return JSONResponse({"detail": {"status": "error", "message": "fault"}}, status_code=status)
        return JSONResponse({"subscription": {"tier": "free", "character_count": 0, "character_limit": 10000},
                             "is_new_user": False, "xi_api_key": None})

    async def _rest_tts(self, request: Request) -> Response:
        body = await request.json()
        self._record("http", request.url.path, request.query_params, request.headers, body=body)
        if request.headers.get("xi-api-key") != self.api_key:
            return JSONResponse(INVALID_KEY, status_code=401)
        if (status := self._fault_status()) is not None:
            return JSONResponse({"detail": {"status": "too_many_concurrent_requests", "message": "busy"}},
                                status_code=status)
        fmt = request.query_params.get("output_format", "mp3_44100_128")
        pcm = await speech_backend().synthesize(body["text"], 22050 if fmt.startswith("mp3") else fmt_rate(fmt))
        return Response(encode_audio(pcm, fmt), media_type="audio/mpeg" if fmt.startswith("mp3") else "audio/basic")

    async def _add_voice(self, request: Request) -> Response:
        form = await request.form()
        files = form.getlist("files")
        entry = self._record("http", request.url.path, request.query_params, request.headers,
                             name=form.get("name"), files=[(f.filename, len(await f.read())) for f in files
                                                           if hasattr(f, "read")],
                             fields={k: v for k, v in form.items() if isinstance(v, str)})
        await form.close()
        if request.headers.get("xi-api-key") != self.api_key:
            return JSONResponse(INVALID_KEY, status_code=401)
        if (status := self._fault_status()) is not None:
            return JSONResponse({"detail": {"status": "error", "message": "fault"}}, status_code=status)
        if not entry["name"] or not entry["files"]:
            return JSONResponse({"detail": [{"loc": ["body", "files"], "msg": "field required"}]}, status_code=422)
        voice_id = uuid.uuid4().hex[:20]
        self.voices_added.append({"voice_id": voice_id, **entry})
        return JSONResponse({"voice_id": voice_id, "requires_verification": False})

    # --- WebSocket ------------------------------------------------------------------------------------------
    async def _gate(self, ws: WebSocket) -> dict[str, Any] | None:
        entry = self._record("ws", ws.url.path, ws.query_params, ws.headers, messages=[], generated=[])
        if "xi_api_key" in ws.query_params:
            entry["key_in_query"] = True
        status = self._fault_status()
        if status is not None or (not entry["key_ok"] and self.auth_style == "handshake"):
            await ws.send_denial_response(JSONResponse(INVALID_KEY if status is None else {"detail": "fault"},
                                                       status_code=status or 403))
            return None
        await ws.accept()
        if not entry["key_ok"]:
            await self._error_close(ws, "Invalid API key", "invalid_api_key")
            return None
        return entry

    async def _error_close(self, ws: WebSocket, message: str, error: str) -> None:
        self.errors_sent.append(error)
        await ws.send_text(json.dumps({"message": message, "error": error, "code": 1008}))
        await ws.close(code=1008, reason=message)

    async def _multi(self, ws: WebSocket) -> None:
        entry = await self._gate(ws)
        if entry is None:
            return
        fmt = ws.query_params.get("output_format", "mp3_44100_128")
        send_lock = asyncio.Lock()
        state = {"chunks": 0, "dead": False}
        contexts: dict[str, dict[str, Any]] = {}  # open (not final) contexts
        tasks: set[asyncio.Task[None]] = set()

        async def emit(payload: dict[str, Any] | str) -> None:
            async with send_lock:
                if not state["dead"]:
                    await ws.send_text(payload if isinstance(payload, str) else json.dumps(payload))

        async def generate(cid: str, text: str) -> None:
            received = time.perf_counter()
            ctx = contexts[cid]
            self._contexts_started += 1
            entry["generated"].append(cid)
            if self.slow_first_byte and self._contexts_started <= self.slow_times:
                await asyncio.sleep(self.slow_first_byte)
            if self.malformed:
                await emit("{not json")
                return
            for audio, chars in await self.sentence_audio(text.strip(), fmt):
                if ctx["cancelled"] or state["dead"]:
                    return
                await emit({"audio": base64.b64encode(audio).decode(), "isFinal": None, "contextId": cid,
                            "alignment": self._alignment(chars), "normalizedAlignment": self._alignment(chars)})
                if received:
                    self.first_bytes.append((received, time.perf_counter()))
                    received = 0.0
                state["chunks"] += 1
                if self.drop_after_chunks is not None and state["chunks"] >= self.drop_after_chunks:
                    state["dead"] = True
                    await ws.close(code=1011, reason="internal error")
                    return
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)

        async def finish(cid: str, gens: list[asyncio.Task[None]]) -> None:
            await asyncio.gather(*gens, return_exceptions=True)
            contexts.pop(cid, None)
            await emit({"isFinal": True, "contextId": cid})

        closing = False
        try:
            while True:
                msg = json.loads(await ws.receive_text())
                entry["messages"].append(msg)
                if msg.get("close_socket"):  # flushed contexts finish first, then the socket closes
                    closing = True
                    await asyncio.gather(*[g for c in contexts.values() for g in c["gens"]], return_exceptions=True)
                    await asyncio.gather(*tasks, return_exceptions=True)
                    break
                cid = msg.get("context_id", "default")
                if msg.get("close_context"):
                    ctx = contexts.get(cid)
                    if ctx is not None and not ctx["closing"]:
                        ctx["closing"] = True  # unflushed text is dropped; flushed text keeps generating
                        task = asyncio.create_task(finish(cid, ctx["gens"]))
                        tasks.add(task)
                    continue
                if cid not in contexts:
                    if len(contexts) >= 5:
                        state["dead"] = True
                        await self._error_close(ws, "Maximum simultaneous contexts per WebSocket connection "
                                                    "exceeded (5). Please close an existing context before opening "
                                                    "a new one.", "max_active_conversations")
                        return
                    contexts[cid] = {"buffer": "", "gens": [], "closing": False, "cancelled": False}
                ctx = contexts[cid]
                ctx["buffer"] += msg.get("text", "")
                if msg.get("flush") and ctx["buffer"].strip():
                    text, ctx["buffer"] = ctx["buffer"], ""
                    ctx["gens"].append(asyncio.create_task(generate(cid, text)))
        except (WebSocketDisconnect, RuntimeError, json.JSONDecodeError):
            pass
        finally:
            state["dead"] = True
            for cid, ctx in contexts.items():  # the client went away mid-generation: that stops it here
                if any(not g.done() for g in ctx["gens"]):
                    self.cancelled.append(cid)
                for g in ctx["gens"]:
                    g.cancel()
            for t in tasks:
                t.cancel()
            if closing:
                with contextlib.suppress(Exception):
                    await ws.close()

    async def _single(self, ws: WebSocket) -> None:
        """stream-input: first message with settings, text until ``{"text": ""}``, audio, then isFinal."""
        entry = await self._gate(ws)
        if entry is None:
            return
        fmt = ws.query_params.get("output_format", "mp3_44100_128")
        text = ""
        try:
            while True:
                msg = json.loads(await ws.receive_text())
                entry["messages"].append(msg)
                if msg.get("text") == "":
                    break
                text += msg.get("text", "")
            for audio, chars in await self.sentence_audio(text.strip(), fmt):
                await ws.send_text(json.dumps({"audio": base64.b64encode(audio).decode(), "isFinal": None,
                                               "alignment": self._alignment(chars)}))
            await ws.send_text(json.dumps({"isFinal": True}))
            await ws.close()
        except WebSocketDisconnect:
            pass
