"""A fake Deepgram speaking the documented wire protocol, with real speech behind it (Whisper hears, Piper talks).

Routes (auth: ``Authorization: Token <api_key>``; refused with HTTP 401 ``{"err_code": "INVALID_AUTH", ...}``,
on the WebSocket upgrade too):

* ``WS /v1/listen`` -- binary audio (``encoding`` mulaw or linear16 at ``sample_rate``) is buffered and really
  transcribed: interim ``Results`` every ``interim_every`` seconds of new audio (when ``interim_results``), a
  final one (``speech_final``) after ``max(endpointing, min_endpoint_silence)`` of silence, a final one (not
  ``speech_final``) once speech has gone on for ``max_segment`` seconds without such a pause (and an empty one
  every ``max_segment`` seconds while nobody speaks), a final one with ``from_finalize`` on ``Finalize``;
  ``KeepAlive`` is silent; ``CloseStream`` finalizes, sends ``Metadata`` and closes 1000. No audio nor KeepAlive
  for ``idle_timeout`` seconds closes 1011 ``NET-0001``. Word times are seconds of audio received on the socket;
  they are spread over the voiced part of each segment.
* ``POST /v1/listen`` (WAV body, or raw with ``encoding``/``sample_rate``) → Deepgram's pre-recorded JSON.
* ``WS /v1/speak`` -- ``Metadata`` on open; ``Speak`` buffers text, ``Flush`` synthesizes it (Piper) and streams
  it in ``tts_chunk_ms`` binary frames, then ``Flushed`` with ``sequence_id``; ``Clear`` stops it (``Cleared``);
  unknown messages get a ``Warning``; ``Close`` closes 1000.
* ``POST /v1/speak`` → raw audio (``container=none``) or WAV; ``GET /v1/projects`` → the project list.

Fault knobs: ``fail_handshakes`` / ``fail_http`` (statuses answered next, e.g. ``[429]``), ``drop_listen_after``
(seconds of audio, once), ``malformed_listen_after`` (once), ``slow_first_byte`` (TTS; for the next
``slow_count`` sentences, all when None), ``drop_speak_after_chunks`` (once), ``malformed_speak`` (once),
``speak_error`` (an ``Error`` frame instead of audio, once). Everything received is recorded (the key is not).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from fakes.speech import speech_backend
from telebridge.audio.g711 import alaw_decode, ulaw_decode, ulaw_encode
from telebridge.audio.resample import resample_once
from telebridge.audio.wav import read_wav, wav_bytes

__all__ = ["FakeDeepgram", "ListenRecord", "SpeakRecord"]

VOICED_RMS = 0.01
FRAME = 0.02


def _error(status: int) -> JSONResponse:
    codes = {401: ("INVALID_AUTH", "Invalid credentials."), 429: ("TOO_MANY_REQUESTS", "Too many requests."),
             400: ("Bad Request", "Bad request.")}
    code, msg = codes.get(status, ("INTERNAL_SERVER_ERROR", "Internal server error."))
    return JSONResponse({"err_code": code, "err_msg": msg, "request_id": str(uuid.uuid4())}, status_code=status,
                        headers={"dg-error": msg})


def _voiced(x: np.ndarray, rate: int) -> np.ndarray:
    n = max(1, int(FRAME * rate))
    frames = len(x) // n
    if not frames:
        return np.zeros(0, dtype=bool)
    f = x[: frames * n].reshape(frames, n)
    return np.sqrt(np.mean(f * f, axis=1)) > VOICED_RMS


def _timed_words(text: str, x: np.ndarray, rate: int, t0: float) -> list[dict[str, Any]]:
    """Whisper gives text only: spread the words over the voiced span, in proportion to their length."""
    words = text.split()
    if not words:
        return []
    voiced = np.flatnonzero(_voiced(x, rate))
    a, b = (voiced[0] * FRAME, (voiced[-1] + 1) * FRAME) if len(voiced) else (0.0, len(x) / rate)
    weights = np.array([len(w) + 1 for w in words], dtype=np.float64)
    edges = a + (b - a) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    return [{"word": w.strip(".,!?;:\"").lower(), "start": round(t0 + edges[i], 3), "end": round(t0 + edges[i + 1], 3),
             "confidence": 0.9, "punctuated_word": w} for i, w in enumerate(words)]


def _results(words: list[dict], start: float, duration: float, *, is_final: bool, speech_final: bool = False,
             from_finalize: bool = False, model: str = "nova-2", request_id: str = "") -> dict[str, Any]:
    data = {
        "type": "Results", "channel_index": [0, 1], "duration": round(duration, 3), "start": round(start, 3),
        "is_final": is_final, "speech_final": speech_final,
        "channel": {"alternatives": [{"transcript": " ".join(w["punctuated_word"] for w in words),
                                      "confidence": 0.9 if words else 0.0, "words": words}]},
        "metadata": {"request_id": request_id, "model_info": {"name": model, "version": "fake", "arch": "fake"},
                     "model_uuid": "00000000-0000-0000-0000-000000000000"},
    }
    if from_finalize:
        data["from_finalize"] = True
    return data


@dataclass
class ListenRecord:
    url: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    controls: list[str] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    sizes: list[int] = field(default_factory=list)  # bytes per binary message
    sent: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None


@dataclass
class SpeakRecord:
    url: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    messages: list[dict[str, Any]] = field(default_factory=list)
    chunks: int = 0
    flush_times: list[float] = field(default_factory=list)


class FakeDeepgram:
    def __init__(self, api_key: str = "dg-test-key-0123456789", *, idle_timeout: float = 10.0,
                 interim_every: float = 0.5, min_endpoint_silence: float = 0.5, max_segment: float = 8.0,
                 tts_chunk_ms: int = 40, tts_pace: float = 0.004) -> None:
        self.api_key = api_key
        self.idle_timeout = idle_timeout
        self.interim_every = interim_every
        self.min_endpoint_silence = min_endpoint_silence
        self.max_segment = max_segment
        self.tts_chunk_ms = tts_chunk_ms
        self.tts_pace = tts_pace
        self.fail_handshakes: deque[int] = deque()
        self.fail_http: deque[int] = deque()
        self.drop_listen_after: float | None = None
        self.malformed_listen_after: float | None = None
        self.slow_first_byte = 0.0
        self.slow_count: int | None = None
        self.drop_speak_after_chunks: int | None = None
        self.malformed_speak = False
        self.speak_error: str | None = None
        self.listens: list[ListenRecord] = []
        self.speaks: list[SpeakRecord] = []
        self.http: list[dict[str, Any]] = []
        self.urls: list[str] = []
        self.auth_failures = 0
        # (Flush received, first audio byte written) per /v1/speak sentence, time.perf_counter() seconds: the
        # fake's own time to first byte, which benchmarks subtract from what the client saw.
        self.first_bytes: list[tuple[float, float]] = []
        self.app = Starlette(routes=[
            WebSocketRoute("/v1/listen", self._listen_ws), WebSocketRoute("/v1/speak", self._speak_ws),
            Route("/v1/listen", self._listen_rest, methods=["POST"]), Route("/v1/speak", self._speak_rest,
                                                                             methods=["POST"]),
            Route("/v1/projects", self._projects, methods=["GET"]),
        ])

    # --- common ---------------------------------------------------------------------------------------------
    def _refusal(self, headers: Any, failures: deque[int]) -> JSONResponse | None:
        if headers.get("authorization") != f"Token {self.api_key}":
            self.auth_failures += 1
            return _error(401)
        if failures:
            return _error(failures.popleft())
        return None

    @staticmethod
    def _headers(headers: Any) -> dict[str, str]:
        return {k: ("Token ***" if k == "authorization" else v) for k, v in headers.items()}

    def _slow(self) -> float:
        if not self.slow_first_byte or self.slow_count == 0:
            return 0.0
        if self.slow_count is not None:
            self.slow_count -= 1
        return self.slow_first_byte

    # --- REST -----------------------------------------------------------------------------------------------
    async def _projects(self, request: Request) -> Response:
        self.urls.append(str(request.url))
        self.http.append({"method": "GET", "path": request.url.path, "headers": self._headers(request.headers)})
        refusal = self._refusal(request.headers, self.fail_http)
        return refusal or JSONResponse({"projects": [{"project_id": "fake-project", "name": "Fake project"}]})

    async def _listen_rest(self, request: Request) -> Response:
        self.urls.append(str(request.url))
        q = parse_qs(request.url.query)
        body = await request.body()
        self.http.append({"method": "POST", "path": "/v1/listen", "query": q, "bytes": len(body),
                          "headers": self._headers(request.headers)})
        refusal = self._refusal(request.headers, self.fail_http)
        if refusal:
            return refusal
        try:
            if request.headers.get("content-type", "").startswith("audio/wav"):
                x, rate = read_wav(body)
            else:
                rate = int(q["sample_rate"][0])
                x = _decode(q["encoding"][0], bytes(body))
        except Exception:
            return _error(400)
        x16 = resample_once(x, rate, 16000) if rate != 16000 else x
        text = await speech_backend().transcribe(x16)
        words = _timed_words(text, x, rate, 0.0)
        return JSONResponse({
            "metadata": {"transaction_key": "deprecated", "request_id": str(uuid.uuid4()), "sha256": "0" * 64,
                         "created": datetime.now(timezone.utc).isoformat(), "duration": len(x) / rate, "channels": 1},
            "results": {"channels": [{"alternatives": [{"transcript": " ".join(w["punctuated_word"] for w in words),
                                                        "confidence": 0.9, "words": words}]}]},
        })

    async def _speak_rest(self, request: Request) -> Response:
        self.urls.append(str(request.url))
        q = parse_qs(request.url.query)
        self.http.append({"method": "POST", "path": "/v1/speak", "query": q, "headers": self._headers(request.headers)})
        refusal = self._refusal(request.headers, self.fail_http)
        if refusal:
            return refusal
        encoding, rate = q.get("encoding", ["linear16"])[0], int(q.get("sample_rate", ["24000"])[0])
        text = (await request.json()).get("text", "")
        if encoding not in ("linear16", "mulaw", "alaw") or not text:
            return _error(400)
        await asyncio.sleep(self._slow())
        audio = await _synth(text, encoding, rate)
        if q.get("container", ["wav"])[0] != "none":
            return Response(wav_bytes(np.frombuffer(audio, "<i2"), rate), media_type="audio/wav")
        return Response(audio, media_type="application/octet-stream")

    # --- /v1/listen -----------------------------------------------------------------------------------------
    async def _listen_ws(self, ws: WebSocket) -> None:
        self.urls.append(str(ws.url))
        refusal = self._refusal(ws.headers, self.fail_handshakes)
        q = parse_qs(ws.url.query)
        encoding, rate = q.get("encoding", [""])[0], q.get("sample_rate", [""])[0]
        if refusal is None and (encoding not in ("linear16", "mulaw") or not rate.isdigit()):
            refusal = _error(400)
        if refusal is not None:
            await ws.send_denial_response(refusal)
            return
        await ws.accept()
        record = ListenRecord(str(ws.url), q, self._headers(ws.headers))
        self.listens.append(record)
        await _ListenSession(self, ws, record, encoding, int(rate)).run()

    # --- /v1/speak ------------------------------------------------------------------------------------------
    async def _speak_ws(self, ws: WebSocket) -> None:
        self.urls.append(str(ws.url))
        refusal = self._refusal(ws.headers, self.fail_handshakes)
        q = parse_qs(ws.url.query)
        encoding, rate = q.get("encoding", ["linear16"])[0], int(q.get("sample_rate", ["24000"])[0])
        if refusal is None and encoding not in ("linear16", "mulaw", "alaw"):
            refusal = _error(400)
        if refusal is not None:
            await ws.send_denial_response(refusal)
            return
        await ws.accept()
        record = SpeakRecord(str(ws.url), q, self._headers(ws.headers))
        self.speaks.append(record)
        await ws.send_json({"type": "Metadata", "request_id": str(uuid.uuid4()), "model_name": q.get("model", [""])[0],
                            "model_version": "fake", "model_uuid": str(uuid.uuid4())})
        jobs: asyncio.Queue = asyncio.Queue()
        state = {"flushes": 0, "text": []}
        worker = asyncio.create_task(self._speak_worker(ws, record, jobs, encoding, rate))
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                try:
                    data = json.loads(message.get("text") or "")
                except ValueError:
                    await ws.send_json({"type": "Warning", "warn_code": "INVALID_MESSAGE", "warn_msg": "not JSON"})
                    continue
                record.messages.append(data)
                kind = data.get("type")
                if kind == "Speak":
                    state["text"].append(str(data.get("text", "")))
                elif kind == "Flush" and len(record.flush_times) >= 20 \
                        and time.monotonic() - record.flush_times[-20] < 60:
                    await ws.send_json({"type": "Warning", "warn_code": "FLUSH_LIMIT",
                                        "warn_msg": "Too many Flush messages: at most 20 per 60 seconds."})
                elif kind == "Flush":
                    record.flush_times.append(time.monotonic())
                    jobs.put_nowait((state["flushes"], "".join(state["text"])))
                    state["flushes"] += 1
                    state["text"] = []
                elif kind == "Clear":
                    while not jobs.empty():
                        jobs.get_nowait()
                    state["text"] = []
                    worker.cancel()
                    await asyncio.gather(worker, return_exceptions=True)
                    await ws.send_json({"type": "Cleared", "sequence_id": max(0, state["flushes"] - 1)})
                    worker = asyncio.create_task(self._speak_worker(ws, record, jobs, encoding, rate))
                elif kind == "Close":
                    await ws.close(1000)
                    return
                else:
                    await ws.send_json({"type": "Warning", "warn_code": "UNKNOWN_MESSAGE_TYPE",
                                        "warn_msg": f"unknown message type {kind!r}"})
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    async def _speak_worker(self, ws: WebSocket, record: SpeakRecord, jobs: asyncio.Queue, encoding: str,
                            rate: int) -> None:
        width = 2 if encoding == "linear16" else 1
        step = max(1, rate * self.tts_chunk_ms // 1000) * width
        while True:
            seq, text = await jobs.get()
            received = time.perf_counter()
            if self.speak_error:
                message, self.speak_error = self.speak_error, None
                await ws.send_json({"type": "Error", "err_code": "FAKE_ERROR", "err_msg": message})
                continue
            await asyncio.sleep(self._slow())
            audio = await _synth(text, encoding, rate) if text.strip() else b""
            for i in range(0, len(audio), step):
                if self.malformed_speak:
                    self.malformed_speak = False
                    await ws.send_text("{not json")
                await ws.send_bytes(audio[i : i + step])
                if i == 0:
                    self.first_bytes.append((received, time.perf_counter()))
                record.chunks += 1
                if self.drop_speak_after_chunks is not None and record.chunks >= self.drop_speak_after_chunks:
                    self.drop_speak_after_chunks = None
                    await ws.close(1011, "fake drop")
                    return
                await asyncio.sleep(self.tts_pace)
            await ws.send_json({"type": "Flushed", "sequence_id": seq})


def _decode(encoding: str, data: bytes) -> np.ndarray:
    if encoding == "mulaw":
        return ulaw_decode(data).astype(np.float32) / 32768.0
    if encoding == "alaw":
        return alaw_decode(data).astype(np.float32) / 32768.0
    return np.frombuffer(data[: len(data) - len(data) % 2], "<i2").astype(np.float32) / 32768.0


async def _synth(text: str, encoding: str, rate: int) -> bytes:
    pcm = await speech_backend().synthesize(text, rate)
    if encoding == "mulaw":
        return ulaw_encode(pcm)
    if encoding == "alaw":  # A-law encode (G.711, segment table), enough for a fake
        x = pcm.astype(np.int32)
        sign = np.where(x >= 0, 0xD5, 0x55)
        mag = np.minimum(np.abs(x), 32767) >> 3
        seg = np.clip(np.floor(np.log2(np.maximum(mag, 1))).astype(int) - 4, 0, 7)
        mant = np.where(seg == 0, mag >> 1, mag >> seg) & 0x0F
        return ((((seg << 4) | mant) ^ sign) & 0xFF).astype(np.uint8).tobytes()
    return pcm.astype("<i2").tobytes()


class _ListenSession:
    """One /v1/listen socket: audio in, Results out (a worker runs Whisper, one job at a time)."""

    def __init__(self, fake: FakeDeepgram, ws: WebSocket, record: ListenRecord, encoding: str, rate: int) -> None:
        self.fake, self.ws, self.record = fake, ws, record
        self.encoding, self.rate = encoding, rate
        q = record.query
        self.interim = q.get("interim_results", ["false"])[0] == "true"
        endpointing = q.get("endpointing", ["10"])[0]
        self.endpoint = None if endpointing == "false" else max(int(endpointing) / 1000, fake.min_endpoint_silence)
        self.model = q.get("model", ["base"])[0]
        self.request_id = str(uuid.uuid4())
        self.audio = np.zeros(0, dtype=np.float32)
        self.final_upto = 0  # samples
        self.interim_mark = 0
        self.jobs: asyncio.Queue = asyncio.Queue()
        self.dropped = self.malformed = False

    @property
    def now(self) -> int:
        return len(self.audio)

    async def send(self, data: dict[str, Any]) -> None:
        self.record.sent.append(data)
        await self.ws.send_json(data)

    async def run(self) -> None:
        worker = asyncio.create_task(self._worker())
        try:
            while True:
                try:
                    message = await asyncio.wait_for(self.ws.receive(), self.fake.idle_timeout)
                except asyncio.TimeoutError:
                    await self._close(1011, "NET-0001")
                    return
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    if not message["bytes"]:
                        await self._finish()
                        return
                    if not await self._audio(message["bytes"]):
                        return
                    continue
                try:
                    kind = json.loads(message.get("text") or "").get("type")
                except (ValueError, AttributeError):
                    kind = None
                self.record.controls.append(str(kind))
                if kind == "Finalize":
                    self._final(self.now, from_finalize=True)
                elif kind == "CloseStream":
                    await self._finish()
                    return
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    async def _audio(self, data: bytes) -> bool:
        self.record.audio += data
        self.record.sizes.append(len(data))
        self.audio = np.concatenate([self.audio, _decode(self.encoding, data)])
        seconds = self.now / self.rate
        fake = self.fake
        if fake.drop_listen_after is not None and seconds >= fake.drop_listen_after and not self.dropped:
            fake.drop_listen_after, self.dropped = None, True
            await self._close(1011, "NET-0000")
            return False
        if fake.malformed_listen_after is not None and seconds >= fake.malformed_listen_after:
            fake.malformed_listen_after = None
            await self.ws.send_text("{this is not json")
        pending = self.audio[self.final_upto :]
        voiced = _voiced(pending, self.rate)
        if not voiced.any():
            if len(pending) / self.rate >= fake.max_segment:
                # Nobody speaks: an empty final, as Deepgram sends. The newest audio stays pending: a soft onset in
                # it, below the voiced level, belongs to what follows.
                upto = self.now - int(fake.min_endpoint_silence * self.rate)
                self._final(upto)
            return True
        silent_tail = 0
        for v in voiced[::-1]:
            if v:
                break
            silent_tail += 1
        if self.endpoint is not None and silent_tail * FRAME >= self.endpoint:
            self._final(self.now, speech_final=True)
        elif (len(voiced) - int(np.argmax(voiced))) * FRAME >= fake.max_segment:
            # (speech going on for max_segment without such a pause: counted from its first voiced frame, not from
            # the last final -- silence before it makes no segment long, and must not cut its first word off)
            self._final(self.now)
        elif self.interim and (self.now - self.interim_mark) / self.rate >= fake.interim_every:
            self.interim_mark = self.now
            self.jobs.put_nowait(("interim", self.now, False, False))
        return True

    def _final(self, upto: int, *, speech_final: bool = False, from_finalize: bool = False) -> None:
        """A final result of the audio up to sample ``upto`` is on its way; what comes after starts the next one."""
        self.jobs.put_nowait(("final", upto, speech_final, from_finalize))
        self.final_upto = self.interim_mark = upto

    async def _worker(self) -> None:
        done_upto = 0  # samples covered by the last final result
        while True:
            job = await self.jobs.get()
            try:
                done_upto = await self._job(job, done_upto)
            finally:
                self.jobs.task_done()

    async def _job(self, job: tuple[str, int, bool, bool], done_upto: int) -> int:
        kind, upto, speech_final, from_finalize = job
        if kind == "interim" and not self.jobs.empty():
            return done_upto  # a newer job supersedes it
        start = done_upto
        if upto <= start and not from_finalize:
            return done_upto
        x = self.audio[start:upto]
        text = ""
        if _voiced(x, self.rate).any():
            x16 = resample_once(x, self.rate, 16000) if self.rate != 16000 else x
            text = await speech_backend().transcribe(x16)
        words = _timed_words(text, x, self.rate, start / self.rate)
        final = kind == "final"
        if final:
            done_upto = max(done_upto, upto)
        elif not words:
            return done_upto
        await self.send(_results(words, start / self.rate, max(0, upto - start) / self.rate, is_final=final,
                                 speech_final=speech_final, from_finalize=from_finalize, model=self.model,
                                 request_id=self.request_id))
        return done_upto

    async def _finish(self) -> None:
        """CloseStream: finalize what is left, then Metadata, then a normal close (unless the client left)."""
        self.jobs.put_nowait(("final", self.now, False, False))
        done = asyncio.ensure_future(self.jobs.join())
        gone = asyncio.ensure_future(self.ws.receive())
        try:
            await asyncio.wait({done, gone}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            if not done.done():
                return
            await self.send({"type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
                             "sha256": "0" * 64, "created": datetime.now(timezone.utc).isoformat(),
                             "duration": self.now / self.rate, "channels": 1})
            await self._close(1000, "")
        except Exception:
            return
        finally:
            for fut in (done, gone):
                fut.cancel()
            await asyncio.gather(done, gone, return_exceptions=True)

    async def _close(self, code: int, reason: str) -> None:
        self.record.close_code = code
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)
