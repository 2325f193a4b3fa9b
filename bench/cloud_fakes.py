"""Light cloud-speech fakes for the ``cloud`` scenario of ``cpu_per_call.py``: Deepgram live STT + Deepgram Aura TTS.

Why a separate, light fake: the scenario measures what the *server* spends per call-second when its speech runs
on a cloud provider (the realistic production load: N calls streaming caller audio up to the STT socket and
provider audio down from the TTS socket, full duplex). The fake runs in its own process (a third one, next to
the server and the load generator) so its CPU is not counted, and it does as little as possible, so that on a
2-core machine it does not steal the server's core:

* ``WS /v1/listen`` accepts the audio (μ-law 8 kHz from a phone call, or linear16) and never transcribes: it
  answers with empty final ``Results`` every ``--results-every`` seconds of audio received (Deepgram sends
  results through silence too), an empty ``from_finalize`` result to each ``Finalize``, ``Metadata`` + close
  1000 to ``CloseStream``; ``KeepAlive`` is silent. With ``--transcript TEXT`` (``bench/load.py``'s
  conversations) it "hears" speech by energy alone: each run of loud 20 ms frames (a caller's question over the
  line noise) becomes TEXT's words, spread over the run and sent as final words in the next result (or the
  ``Finalize`` answer), so the call's turn gets a transcript without any model running here.
* ``WS /v1/speak``: ``Metadata`` on open; ``Speak`` buffers text; ``Flush`` streams the sentence's audio, then
  ``Flushed``; ``Clear`` stops it (``Cleared``); ``Close`` closes 1000. The audio is **pre-synthesized** at start
  (Piper, once per known sentence: the talker's monologue), so nothing is synthesized during the window; an
  unknown sentence gets a slice of that speech as long as the text would take to say (~15 characters/s).
  Audio goes out in ``--chunk-ms`` binary messages **paced at real time** per socket, at most ``--lead``
  seconds ahead (the first ``--lead`` seconds of a reply arrive at once, like a provider's fast first bytes),
  so each call ingests one second of provider audio per second of call, as in production over a whole call.
* ``GET /v1/projects``: the credential check.

Like most WebSocket servers (uvicorn's default), the fake accepts the permessage-deflate extension when the
client offers it, and telebridge's WebSocket clients offer it (the ``websockets`` library's default): every
audio message is then zlib-compressed by the sender and inflated by the receiver. ``--no-deflate`` refuses the
extension, to measure what that costs the server (whether the real Deepgram accepts it is not known here).

The key is checked (``Authorization: Token <key>``). Run as a process:
``python bench/cloud_fakes.py --port P --key K``; it prints one JSON line ``{"event": "ready", ...}`` once it
serves, then one ``{"event": "stats", ...}`` line (sockets, audio in/out) when its stdin closes, and exits.
:func:`fakes_process` does that from the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHARS_PER_SECOND = 15.0


# =================================================================================================================
# Audio: pre-synthesized once
# =================================================================================================================


class Voice:
    """Sentence audio (int16 at Piper's rate) synthesized at start; encoded per (encoding, rate) on first use."""

    def __init__(self, sentences: list[str]) -> None:
        from telebridge.providers.tts.piper import default_piper_voice, load_piper_voice

        piper = load_piper_voice(default_piper_voice())
        self.rate = int(piper.config.sample_rate)
        self.pcm: dict[str, np.ndarray] = {}
        for s in sentences:
            chunks = [c.audio_int16_array for c in piper.synthesize(s)]
            self.pcm[_key(s)] = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
        self.clip = np.concatenate(list(self.pcm.values()) or [np.zeros(self.rate, np.int16)])
        self._encoded: dict[tuple[str, str, int], bytes] = {}

    def audio(self, text: str, encoding: str, rate: int) -> bytes:
        key = _key(text)
        if key not in self.pcm:  # unknown text: a slice of known speech, as long as the text would take to say
            n = min(len(self.clip), int(self.rate * max(0.3, len(key) / CHARS_PER_SECOND)))
            cache_key = f"#{n}"
            if cache_key not in self.pcm:
                self.pcm[cache_key] = self.clip[:n]
            key = cache_key
        found = self._encoded.get((key, encoding, rate))
        if found is None:
            from telebridge.audio.g711 import ulaw_encode
            from telebridge.audio.resample import resample_once

            x = self.pcm[key].astype(np.float32) / 32768.0
            if rate != self.rate:
                x = resample_once(x, self.rate, rate)
            if encoding == "mulaw":
                found = ulaw_encode(x)
            else:
                found = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
            self._encoded[(key, encoding, rate)] = found
        return found


def _key(text: str) -> str:
    return " ".join(text.split())


# =================================================================================================================
# The Starlette app
# =================================================================================================================


@dataclass
class Stats:
    listen_sockets: int = 0
    speak_sockets: int = 0
    audio_in_bytes: int = 0
    audio_out_bytes: int = 0
    results_sent: int = 0
    flushes: int = 0
    transcripts: int = 0
    prerecorded: int = 0  # POST /v1/listen answered
    said: dict[str, int] = field(default_factory=dict)  # sentences spoken (first 64 characters), by count
    refused: int = 0
    errors: list[str] = field(default_factory=list)


def _results(start: float, duration: float, *, from_finalize: bool = False,
             words: list[dict[str, Any]] | None = None) -> str:
    words = words or []
    text = " ".join(w["punctuated_word"] for w in words)
    data: dict[str, Any] = {
        "type": "Results", "channel_index": [0, 1], "duration": round(duration, 3), "start": round(start, 3),
        "is_final": True, "speech_final": bool(words),
        "channel": {"alternatives": [{"transcript": text, "confidence": 0.99 if words else 0.0, "words": words}]},
        "metadata": {"request_id": "bench", "model_info": {"name": "nova-2", "version": "bench", "arch": "bench"},
                     "model_uuid": "00000000-0000-0000-0000-000000000000"},
    }
    if from_finalize:
        data["from_finalize"] = True
    return json.dumps(data)


VOICED_RMS = 0.02  # a 20 ms frame above this (-34 dBFS) is speech; the bench's line noise sits at -45 dBFS
RUN_END_SILENCE = 0.3  # a run of speech ends after this much quiet
MIN_RUN = 0.2  # shorter runs (a click) are not words


class EnergyEars:
    """One ``/v1/listen`` socket's "recognizer": runs of loud 20 ms frames become ``text``'s words (socket time)."""

    def __init__(self, text: str, rate: int, width: int) -> None:
        from telebridge.audio.g711 import ulaw_decode_float

        self.words = text.split()
        self.rate, self.width = rate, width
        self.frame = max(1, rate // 50)
        self._table = ulaw_decode_float(bytes(range(256))).astype(np.float32) if width == 1 else None
        self._carry = np.zeros(0, np.float32)
        self.pos = 0.0  # seconds of audio judged so far
        self.run: tuple[float, float] | None = None  # (start, end of the last loud frame)
        self.done: list[tuple[float, float]] = []  # ended runs not yet reported

    def feed(self, data: bytes) -> None:
        if self._table is not None:
            x = self._table[np.frombuffer(data, np.uint8)]
        else:
            x = np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.float32) / 32768.0
        x = np.concatenate([self._carry, x]) if len(self._carry) else x
        n = len(x) // self.frame
        self._carry = x[n * self.frame :]
        if not n:
            return
        frames = x[: n * self.frame].reshape(n, self.frame)
        loud = np.sqrt(np.mean(frames * frames, axis=1)) > VOICED_RMS
        step = self.frame / self.rate
        for is_loud in loud:
            t0, self.pos = self.pos, self.pos + step
            if is_loud:
                self.run = (self.run[0], self.pos) if self.run else (t0, self.pos)
            elif self.run and self.pos - self.run[1] >= RUN_END_SILENCE:
                self._close()

    def _close(self) -> None:
        if self.run and self.run[1] - self.run[0] >= MIN_RUN:
            self.done.append(self.run)
        self.run = None

    def take(self, *, finalize: bool = False) -> list[dict[str, Any]]:
        """Words of every ended run (and, on Finalize, of the one under way)."""
        if finalize:
            self._close()
        out: list[dict[str, Any]] = []
        for a, b in self.done:
            weights = np.array([len(w) + 1 for w in self.words], np.float64)
            edges = a + (b - a) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
            for i, w in enumerate(self.words):
                out.append({"word": w.strip(".,?!").lower(), "start": round(float(edges[i]), 3),
                            "end": round(float(edges[i + 1]), 3), "confidence": 0.99, "punctuated_word": w})
        self.done = []
        return out


def create_app(key: str, voice: Voice, *, chunk_ms: int = 100, lead: float = 0.5, results_every: float = 1.0,
               transcript: str | None = None) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    stats = Stats()

    def refused(headers: Any) -> JSONResponse | None:
        if headers.get("authorization") != f"Token {key}":
            stats.refused += 1
            return JSONResponse({"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.",
                                 "request_id": str(uuid.uuid4())}, status_code=401)
        return None

    async def projects(request: Request) -> Response:
        return refused(request.headers) or JSONResponse({"projects": [{"project_id": "bench", "name": "Bench"}]})

    async def prerecorded(request: Request) -> Response:
        """``POST /v1/listen`` (a WAV, or raw audio with ``encoding``/``sample_rate``): a whole utterance, heard by
        energy like the live socket (``--transcript``), answered in Deepgram's pre-recorded JSON."""
        denial = refused(request.headers)
        if denial is not None:
            return denial
        body = await request.body()
        rate, width, data = 16000, 2, body
        if body[:4] == b"RIFF":
            import io
            import wave

            with wave.open(io.BytesIO(body)) as w:
                rate, width, data = w.getframerate(), w.getsampwidth(), w.readframes(w.getnframes())
        else:
            q = parse_qs(request.url.query)
            if q.get("encoding", [""])[0] == "mulaw":
                width = 1
            rate = int(q.get("sample_rate", [str(rate)])[0])
        text = ""
        if transcript:
            ears = EnergyEars(transcript, rate, width)
            ears.feed(data)
            words = ears.take(finalize=True)
            text = " ".join(w["punctuated_word"] for w in words)
        stats.prerecorded += 1
        return JSONResponse({"metadata": {"request_id": "bench", "duration": len(data) / (rate * width)},
                             "results": {"channels": [{"alternatives": [
                                 {"transcript": text, "confidence": 0.99 if text else 0.0, "words": []}]}]}})

    async def listen(ws: WebSocket) -> None:
        denial = refused(ws.headers)
        if denial is not None:
            await ws.send_denial_response(denial)
            return
        q = parse_qs(ws.url.query)
        width = 1 if q.get("encoding", ["linear16"])[0] == "mulaw" else 2
        bps = int(q.get("sample_rate", ["16000"])[0]) * width
        await ws.accept()
        stats.listen_sockets += 1
        received = 0  # bytes of audio on this socket
        reported = 0  # bytes covered by the results sent so far
        step = int(results_every * bps)
        ears = EnergyEars(transcript, bps // width, width) if transcript else None

        def heard(*, finalize: bool = False) -> list[dict[str, Any]] | None:
            if ears is None:
                return None
            words = ears.take(finalize=finalize)
            stats.transcripts += bool(words)
            return words

        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                if data is not None:
                    received += len(data)
                    stats.audio_in_bytes += len(data)
                    if ears is not None:
                        ears.feed(data)
                    if received - reported >= step:
                        await ws.send_text(_results(reported / bps, (received - reported) / bps, words=heard()))
                        stats.results_sent += 1
                        reported = received
                    continue
                try:
                    kind = json.loads(message.get("text") or "").get("type")
                except (ValueError, AttributeError):
                    kind = None
                if kind == "Finalize":
                    await ws.send_text(_results(reported / bps, (received - reported) / bps, from_finalize=True,
                                                words=heard(finalize=True)))
                    stats.results_sent += 1
                    reported = received
                elif kind == "CloseStream":
                    await ws.send_text(json.dumps({"type": "Metadata", "request_id": "bench",
                                                   "duration": received / bps, "channels": 1}))
                    await ws.close(1000)
                    return
        except (WebSocketDisconnect, RuntimeError):
            return

    async def speak(ws: WebSocket) -> None:
        denial = refused(ws.headers)
        if denial is not None:
            await ws.send_denial_response(denial)
            return
        q = parse_qs(ws.url.query)
        encoding = q.get("encoding", ["linear16"])[0]
        rate = int(q.get("sample_rate", ["24000"])[0])
        width = 1 if encoding == "mulaw" else 2
        step = max(1, rate * chunk_ms // 1000) * width
        await ws.accept()
        stats.speak_sockets += 1
        await ws.send_text(json.dumps({"type": "Metadata", "request_id": str(uuid.uuid4()),
                                       "model_name": q.get("model", [""])[0], "model_version": "bench",
                                       "model_uuid": str(uuid.uuid4())}))
        loop = asyncio.get_running_loop()
        jobs: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        play_end = [0.0]  # when everything sent on this socket would have played (loop clock)

        async def worker() -> None:
            while True:
                seq, text = await jobs.get()
                audio = voice.audio(text, encoding, rate) if text.strip() else b""
                for i in range(0, len(audio), step):
                    piece = audio[i : i + step]
                    delay = play_end[0] - loop.time() - lead
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await ws.send_bytes(piece)
                    stats.audio_out_bytes += len(piece)
                    play_end[0] = max(play_end[0], loop.time()) + len(piece) / (rate * width)
                await ws.send_text(json.dumps({"type": "Flushed", "sequence_id": seq}))

        task = asyncio.create_task(worker())
        flushes, text = 0, []
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                try:
                    data = json.loads(message.get("text") or "")
                    kind = data.get("type")
                except (ValueError, AttributeError):
                    continue
                if kind == "Speak":
                    text.append(str(data.get("text", "")))
                elif kind == "Flush":
                    said = "".join(text).strip()[:64]
                    stats.said[said] = stats.said.get(said, 0) + 1
                    jobs.put_nowait((flushes, "".join(text)))
                    flushes += 1
                    stats.flushes += 1
                    text = []
                elif kind == "Clear":
                    while not jobs.empty():
                        jobs.get_nowait()
                    text = []
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    play_end[0] = loop.time()
                    await ws.send_text(json.dumps({"type": "Cleared", "sequence_id": max(0, flushes - 1)}))
                    task = asyncio.create_task(worker())
                elif kind == "Close":
                    await ws.close(1000)
                    return
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    app = Starlette(routes=[Route("/v1/projects", projects, methods=["GET"]),
                            Route("/v1/listen", prerecorded, methods=["POST"]),
                            WebSocketRoute("/v1/listen", listen), WebSocketRoute("/v1/speak", speak)])
    app.state.stats = stats
    return app


def serve_main(argv: list[str]) -> None:
    import logging

    import uvicorn

    ap = argparse.ArgumentParser(description="light Deepgram STT + TTS fakes (bench)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--chunk-ms", type=int, default=100)
    ap.add_argument("--lead", type=float, default=0.5)
    ap.add_argument("--results-every", type=float, default=1.0)
    ap.add_argument("--no-deflate", action="store_true", help="refuse the permessage-deflate extension")
    ap.add_argument("--transcript", help="STT: runs of loud audio are heard as these words (bench/load.py)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(ROOT))
    from bench.agents.talker import SENTENCES

    voice = Voice(list(SENTENCES))
    app = create_app(args.key, voice, chunk_ms=args.chunk_ms, lead=args.lead, results_every=args.results_every,
                     transcript=args.transcript)
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_config=None, log_level="warning",
                            lifespan="off", ws="websockets-sansio", ws_ping_interval=None,
                            ws_per_message_deflate=not args.no_deflate)
    server = uvicorn.Server(config)

    def watch_stdin() -> None:  # the benchmark closes our stdin to stop us
        for _ in sys.stdin:
            pass
        server.should_exit = True

    threading.Thread(target=watch_stdin, daemon=True).start()

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.05)
        print(json.dumps({"event": "ready", "origin": f"http://127.0.0.1:{args.port}"}), flush=True)
        await task

    asyncio.run(run())
    s = app.state.stats
    print(json.dumps({"event": "stats", **{k: v for k, v in vars(s).items()}}), flush=True)


# =================================================================================================================
# From the benchmark: the fakes as a third process
# =================================================================================================================


@dataclass
class CloudFakes:
    proc: subprocess.Popen[str]
    origin: str
    key: str
    lines: queue.Queue[str | None]

    @property
    def server_env(self) -> dict[str, str]:
        """What the telebridge server needs to use these fakes (agent ``bench/agents/cloud_talker.py``)."""
        return {"DEEPGRAM_API_KEY": self.key, "TELEBRIDGE_DEEPGRAM_BASE_URL": self.origin}

    def stats(self, timeout: float = 20.0) -> dict[str, Any]:
        """Stop the fakes and return their counters (empty if they did not report)."""
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if msg.get("event") == "stats":
                    return msg
        return {}


@contextlib.contextmanager
def fakes_process(port: int, log_path: Path, *, chunk_ms: int = 100, lead: float = 0.5,
                  results_every: float = 1.0, deflate: bool = True, transcript: str | None = None,
                  key: str | None = None) -> Iterator[CloudFakes]:
    """The light fakes in their own process (its CPU is not the server's); yields once they serve."""
    key = key or "dg-bench-" + secrets.token_hex(12)
    env = dict(os.environ, HF_HUB_OFFLINE="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--key", key,
           "--chunk-ms", str(chunk_ms), "--lead", str(lead), "--results-every", str(results_every)]
    if not deflate:
        cmd.append("--no-deflate")
    if transcript:
        cmd += ["--transcript", transcript]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                                cwd=log_path.parent)
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            deadline = time.monotonic() + 120
            origin = None
            while origin is None:
                try:
                    line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
                except queue.Empty:
                    raise TimeoutError("the cloud fakes did not start") from None
                if line is None:
                    raise RuntimeError(f"the cloud fakes exited (code {proc.wait()}); see {log_path}")
                with contextlib.suppress(ValueError):
                    msg = json.loads(line)
                    if msg.get("event") == "ready":
                        origin = str(msg["origin"])
            yield CloudFakes(proc, origin, key, lines)
        finally:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    assert proc.stdin is not None
                    proc.stdin.close()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()


if __name__ == "__main__":
    serve_main(sys.argv[1:])
