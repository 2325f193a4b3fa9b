"""Server CPU per second of call audio, with N concurrent simulated Twilio calls.

Why: the service's promise is many concurrent calls per core (target: at least 5x less server CPU per
call-second than Pipecat 1.14, inbound-only and full duplex, with no frame lag at 25 and 50 calls, Pipecat
measured in the same run). This script measures it end to end against the real server:

* the server runs as a SUBPROCESS (``python -m telebridge serve --agent bench/agents/<agent>.py``); its CPU
  time (user+sys, /proc/<pid>/stat, and per thread from /proc/<pid>/task) is read over a fixed steady-state
  window after a ramp;
* the load generator runs in ANOTHER process (this file with ``--generate``) so its CPU is not counted: N calls,
  each a signed webhook, a signed Media Streams WebSocket, ``connected`` + ``start`` and then 20 ms μ-law media
  frames paced against absolute deadlines, echoing every mark when the audio queued before it has "played"
  (Twilio's behaviour), and strictly decoding every server frame as Twilio would;
* the callers stream line noise at about -45 dBFS: the VAD runs on every window, but no turn starts.

Scenarios: ``baseline`` (a bare Starlette WebSocket sink under the same uvicorn, on uvicorn's own WebSocket protocol,
``json.loads`` per frame: the transport's own cost on this machine, to read the others as a ratio),
``baseline-direct`` (the same sink on telebridge's WebSocket protocol, each frame taken where it is parsed, as the
media route takes it: the transport telebridge runs on), ``inbound`` (``listener`` agent: VAD
only; its quiet calls are at rest, so the VAD takes their windows every fourth tick, four at a time),
``inbound-awake`` (the same with ``TELEBRIDGE_VAD_REST_TICKS=1``: every window at its tick, what a listening call
costs while its caller or agent may speak any moment), ``duplex`` (``talker`` agent: a two-minute monologue plays
for the whole window), ``cloud`` (the same monologue with Deepgram live STT + Deepgram Aura TTS against light fakes
in a third process, ``bench/cloud_fakes.py``: caller audio streams up, provider audio streams down at real-time
pace);
``duplex-off`` (the same with the energy guard instead of the echo canceller), ``duplex-echo`` and
``duplex-echo-off`` (the duplex call over a line that echoes what the caller hears back, 12 dB down and 250 ms
late, like a speakerphone: the canceller's cost while it cancels, against the same call without it);
``pipecat`` and ``pipecat-duplex``: Pipecat 1.14 shaped like its ``twilio-chatbot`` example, listening, or
talking for the whole call like the talker (``bench/pipecat_server.py``, run from its own venv,
``bench/.venv-pipecat``, made on first use by ``bench/pipecat_setup.py``); ``floor``: no server, the inbound
path's numeric work for N calls batched (``bench/bench_floor.py``), to read inbound against baseline + floor.

Lag signals, all observed from outside the server:
* generator lateness p99: how late the generator's own 20 ms sends were (proves the load was real time);
* agent audio ratio: agent audio received / wall time, per call (duplex; 1.00 = paced at real time) and
  ``starved``: time the caller's playback buffer ran dry mid-monologue (audible gaps);
* /healthz round trip during the window: event-loop responsiveness (a busy loop answers late);
* VAD backlog drops: the server's own "VAD stream fell behind" warnings;
* probe (inbound): one extra caller says a sentence, idle and under load; the time from the end of its speech
  to the onset of the agent's answer includes every VAD/endpointing delay the load adds.

Run:  .venv/bin/python bench/cpu_per_call.py [--quick] [--n 10,25,50] [--window 20] [--ramp 5] [--profile]
``--profile`` also runs cProfile on the server's event-loop thread for a few seconds after the window at the
largest N (never during it) and prints where the time goes. With py-spy installed (``pip install py-spy``) the
per-thread split can name the VAD and speech worker threads; without it they show as "other"/"native".
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import http.client
import json
import math
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
from bench.agents import vad_rate  # noqa: E402 - needs the path above
from bench.cpu_compare import fell_behind, print_comparison  # noqa: E402 - needs the path above

Scenario = Literal["baseline", "baseline-direct", "floor", "inbound", "inbound-awake", "duplex", "duplex-off",
                   "duplex-echo", "duplex-echo-off", "cloud", "pipecat", "pipecat-duplex"]
SCENARIOS: tuple[Scenario, ...] = ("baseline", "baseline-direct", "floor", "inbound", "inbound-awake", "duplex",
                                   "duplex-off", "duplex-echo", "duplex-echo-off", "cloud", "pipecat",
                                   "pipecat-duplex")
AGENT_FILES: dict[str, Path] = {
    "inbound": ROOT / "bench" / "agents" / "listener.py",
    "inbound-awake": ROOT / "bench" / "agents" / "listener.py",
    "duplex": ROOT / "bench" / "agents" / "talker.py",
    "duplex-off": ROOT / "bench" / "agents" / "talker.py",
    "duplex-echo": ROOT / "bench" / "agents" / "talker.py",
    "duplex-echo-off": ROOT / "bench" / "agents" / "talker.py",
    "cloud": ROOT / "bench" / "agents" / "cloud_talker.py",
}
DEFAULT_SCENARIOS = ("baseline", "floor", "inbound", "duplex", "cloud", "pipecat", "pipecat-duplex")
TALKING = ("duplex", "duplex-off", "duplex-echo", "duplex-echo-off", "cloud", "pipecat-duplex")
LISTENING = ("inbound", "inbound-awake")  # the listener agent: no outbound audio, the response probe's scenarios
ECHO_OFF = ("duplex-off", "duplex-echo-off")  # the talker with the energy guard, not the canceller (BENCH_ECHO_GUARD=0)
LINE_ECHO = {"duplex-echo": (-12.0, 0.25), "duplex-echo-off": (-12.0, 0.25)}  # (gain dB, delay s) of the line  # scenarios where the agent talks for the whole window
PIPECAT = {"inbound": "pipecat", "inbound-awake": "pipecat", "duplex": "pipecat-duplex",
           "cloud": "pipecat-duplex"}  # the Pipecat counterpart
TARGET_RATIO = 5.0  # telebridge must cost at most 1/5 of its Pipecat counterpart, same N, same run

RATE = 8000
FRAME = 160  # 20 ms of μ-law
TICK = 0.02
NOISE_DBFS = -45.0
LOUD_RMS = 10 ** (-40 / 20)  # a 20 ms frame above this is speech (noise sits at -45 dBFS)
PROBE_TEXT = "What are your opening hours?"
ECHO_RING = 400 * FRAME  # 8 s of what the caller heard, for the line's echo


# =================================================================================================================
# Wire models between the orchestrator and the generator process (JSON lines)
# =================================================================================================================


class GenConfig(BaseModel):
    """What the generator process is told on its command line."""

    url: str
    token: str
    calls: int
    noise_dbfs: float = NOISE_DBFS
    probe: bool = False
    setup_spacing: float = 0.04  # seconds between call set-ups: spreads the calls' 20 ms phases
    seed: int = 1
    echo_db: float | None = None  # the caller's line echoes what they hear, this many dB down (None: no echo)
    echo_delay: float = 0.25  # ... this many seconds late


class WindowStats(BaseModel):
    """What the callers observed during the measurement window."""

    window_s: float
    calls_streaming: int
    frames_sent: int
    late_p50_ms: float
    late_p99_ms: float
    late_max_ms: float
    agent_audio_ratio_mean: float
    agent_audio_ratio_min: float
    starved_ms_per_call_s: float
    marks_echoed: int
    server_msgs_per_call_s: float  # frames the server sent (media + mark + clear), per call-second


class DoneStats(BaseModel):
    protocol_errors: list[str]
    closed_by_server: int
    media_frames_received: int


# =================================================================================================================
# The load generator (its own process)
# =================================================================================================================


def _noise_frames(dbfs: float, seconds: float, seed: int) -> list[bytes]:
    """Band-limited-looking line noise at ``dbfs`` (RMS), μ-law encoded, cut into 20 ms frames."""
    from telebridge.audio.g711 import ulaw_encode

    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    white = rng.standard_normal(n + 2)
    noise = (white[2:] + white[1:-1] + white[:-2]) / 3.0  # a touch of low-pass, like a line
    noise *= 10 ** (dbfs / 20) / float(np.sqrt(np.mean(noise**2)))
    data = ulaw_encode(noise.astype(np.float32))
    return [data[i : i + FRAME] for i in range(0, len(data) - FRAME + 1, FRAME)]


def _frame_rms(pcm: np.ndarray) -> np.ndarray:
    n = len(pcm) // FRAME
    if n == 0:
        return np.zeros(0)
    frames = pcm[: n * FRAME].reshape(n, FRAME).astype(np.float64)
    return np.sqrt(np.mean(frames * frames, axis=1))


class LoadCall:
    """One simulated Twilio call: webhook, signed WebSocket, 20 ms media pump, Twilio-like mark echoes."""

    def __init__(self, gen: Generator, index: int) -> None:
        self.gen = gen
        self.index = index
        self.account_sid = "AC" + secrets.token_hex(16)
        self.call_sid = "CA" + secrets.token_hex(16)
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.ws: Any = None
        self.seq = 0
        self.frames_sent = 0
        self.pending: collections.deque[bytes] = collections.deque()  # scripted audio before noise
        self.on_sent: dict[int, float] = {}  # frames_sent index -> actual send time (probe bookkeeping)
        self.play_end = 0.0  # when Twilio would have played everything received so far (loop clock)
        self.due_marks: collections.deque[tuple[float, str]] = collections.deque()
        self.media_frames = 0
        self.marks_echoed = 0
        self.protocol_errors: list[str] = []
        self.closed_by_server = False
        self.stopping = False
        # window accounting
        self.window_open = False
        self.lateness: list[float] = []
        self.win_audio_samples = 0
        self.win_starved = 0.0
        self.win_frames = 0
        self.win_marks = 0
        self.win_msgs = 0
        self._started_receiving = False
        self.tasks: list[asyncio.Task[None]] = []
        # The line's echo (GenConfig.echo_db): what the caller heard, by sample of the pump's clock (a ring).
        self.t0 = 0.0
        self.heard = np.zeros(ECHO_RING, np.float32) if gen.cfg.echo_db is not None else None

    # -- setup ------------------------------------------------------------------------------------------------
    async def open(self, http: Any) -> None:
        from websockets.asyncio.client import connect

        from telebridge.simulator import parse_twiml
        from telebridge.twilio.signature import compute_signature
        from telebridge.simulator.wire import twilio_connected, twilio_start

        url = self.gen.cfg.url.rstrip("/")
        webhook = url + "/twilio/voice"
        form = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "From": f"+1555{1000000 + self.index:07d}",
            "To": "+15559870002",
            "FromCity": "OAKLAND",
            "FromState": "CA",
            "FromCountry": "US",
            "ToCity": "SAN FRANCISCO",
            "ToCountry": "US",
        }
        headers = {"X-Twilio-Signature": compute_signature(webhook, form, self.gen.cfg.token)}
        response = await http.post(webhook, data=form, headers=headers)
        response.raise_for_status()
        target = parse_twiml(response.text)
        # Twilio dials the advertised URL; the server derived it from our Host header, so it is dialable as is.
        ws_url = target.url
        self.ws = await connect(
            ws_url,
            additional_headers={"X-Twilio-Signature": compute_signature(ws_url, {}, self.gen.cfg.token)},
            user_agent_header="Twilio.TmeWs/1.0",
            compression=None,
            ping_interval=None,
            max_size=16 * 1024 * 1024,
            open_timeout=30,
            proxy=None,
        )
        await self.ws.send(twilio_connected())
        self.seq = 1
        await self.ws.send(twilio_start(self.stream_sid, self.call_sid, self.account_sid, target.parameters, 1))
        self.t0 = asyncio.get_running_loop().time()
        self.tasks = [
            asyncio.create_task(self.pump(), name=f"pump{self.index}"),
            asyncio.create_task(self.receive(), name=f"recv{self.index}"),
        ]

    # -- sending ----------------------------------------------------------------------------------------------
    async def pump(self) -> None:
        from websockets.exceptions import ConnectionClosed

        from telebridge.simulator.wire import twilio_mark, twilio_media

        loop = asyncio.get_running_loop()
        noise = self.gen.noise
        t0 = self.t0
        i = 0
        try:
            while not self.stopping:
                deadline = t0 + (i + 1) * TICK  # frame i covers [i*20, (i+1)*20) ms: it can go once that has passed
                delay = deadline - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = loop.time()
                if self.window_open:
                    self.lateness.append(now - deadline)
                while self.due_marks and self.due_marks[0][0] <= now:
                    _, name = self.due_marks.popleft()
                    self.seq += 1
                    await self.ws.send(twilio_mark(self.stream_sid, name, self.seq))
                    self.marks_echoed += 1
                    if self.window_open:
                        self.win_marks += 1
                payload = self.pending.popleft() if self.pending else noise[(i + self.index * 37) % len(noise)]
                if self.heard is not None:
                    payload = self._echoed(payload, i)
                self.seq += 1
                await self.ws.send(twilio_media(self.stream_sid, payload, i + 1, i * 20, self.seq))
                self.on_sent_hook(self.frames_sent, now)
                self.frames_sent += 1
                if self.window_open:
                    self.win_frames += 1
                i += 1
        except ConnectionClosed:
            self.closed_by_server = not self.stopping

    def on_sent_hook(self, frame_index: int, now: float) -> None:
        """Overridden by the probe caller to timestamp the end of its speech."""

    def _echoed(self, payload: bytes, i: int) -> bytes:
        """Frame ``i`` of the caller's line with the echo of what they heard ``echo_delay`` earlier mixed in."""
        from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode

        assert self.heard is not None
        cfg = self.gen.cfg
        start = (i * FRAME - int(cfg.echo_delay * RATE)) % ECHO_RING
        heard = self.heard[start : start + FRAME]  # (ECHO_RING is a multiple of FRAME: never wraps)
        if not heard.any():
            return payload
        line = ulaw_decode_float(payload) + heard * np.float32(10 ** (cfg.echo_db / 20))  # type: ignore[operator]
        heard[:] = 0.0  # played long ago: the ring's next lap writes here
        return ulaw_encode(line)

    def _heard(self, payload: bytes, play_start: float) -> None:
        """The agent audio the caller hears from ``play_start`` on (loop clock), into the echo ring."""
        from telebridge.audio.g711 import ulaw_decode_float

        assert self.heard is not None
        pcm = ulaw_decode_float(payload)
        at = int(round((play_start - self.t0) * RATE)) % ECHO_RING
        first = min(len(pcm), ECHO_RING - at)
        self.heard[at : at + first] = pcm[:first]
        self.heard[: len(pcm) - first] = pcm[first:]

    # -- receiving --------------------------------------------------------------------------------------------
    async def receive(self) -> None:
        from websockets.exceptions import ConnectionClosed

        from telebridge.simulator.wire import (
            ServerClear,
            ServerMark,
            ServerMedia,
            TwilioProtocolError,
            decode_server_message,
        )

        loop = asyncio.get_running_loop()
        try:
            async for frame in self.ws:
                now = loop.time()
                if self.window_open:
                    self.win_msgs += 1
                try:
                    msg = decode_server_message(frame, expected_stream_sid=self.stream_sid)
                except TwilioProtocolError as exc:
                    if len(self.protocol_errors) < 5:
                        self.protocol_errors.append(f"{exc.code}: {exc.message}")
                    continue
                if isinstance(msg, ServerMedia):
                    n = len(msg.payload)
                    if self._started_receiving and self.window_open and now > self.play_end:
                        self.win_starved += now - self.play_end
                    self._started_receiving = True
                    start = max(self.play_end, now)
                    self.play_end = start + n / RATE
                    self.media_frames += 1
                    if self.window_open:
                        self.win_audio_samples += n
                    self.on_media_hook(msg.payload, start)
                    if self.heard is not None:
                        self._heard(msg.payload, start)
                elif isinstance(msg, ServerMark):
                    # Twilio echoes a mark when playback reaches it: once everything queued before it has played.
                    self.due_marks.append((max(self.play_end, now), msg.name))
                elif isinstance(msg, ServerClear):
                    # Flushed: the buffer empties and every pending mark is echoed at once.
                    self.play_end = now
                    self.due_marks = collections.deque((now, name) for _, name in self.due_marks)
        except ConnectionClosed:
            pass
        finally:
            if not self.stopping:
                self.closed_by_server = True

    def on_media_hook(self, payload: bytes, play_start: float) -> None:
        """Overridden by the probe caller to find the onset of the agent's answer."""

    # -- window -----------------------------------------------------------------------------------------------
    def begin_window(self) -> None:
        self.lateness = []
        self.win_audio_samples = 0
        self.win_starved = 0.0
        self.win_frames = 0
        self.win_marks = 0
        self.win_msgs = 0
        self.window_open = True

    def end_window(self) -> None:
        self.window_open = False

    async def hangup(self) -> None:
        from telebridge.simulator.wire import twilio_stop

        self.stopping = True
        for task in self.tasks[:1]:
            task.cancel()
        await asyncio.gather(*self.tasks[:1], return_exceptions=True)
        with contextlib.suppress(Exception):
            self.seq += 1
            await self.ws.send(twilio_stop(self.stream_sid, self.call_sid, self.account_sid, self.seq))
            await asyncio.wait_for(self.ws.close(), 5)
        for task in self.tasks[1:]:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class ProbeCall(LoadCall):
    """A caller who says one sentence at a time and times the agent's answer (end of speech -> answer onset)."""

    def __init__(self, gen: Generator, index: int) -> None:
        super().__init__(gen, index)
        self.end_frame: int | None = None  # frames_sent index of the last loud frame of the utterance
        self.speech_end: float | None = None
        self.onset: float | None = None
        self.onset_event = asyncio.Event()

    def on_sent_hook(self, frame_index: int, now: float) -> None:
        if self.end_frame is not None and frame_index == self.end_frame:
            self.speech_end = now

    def on_media_hook(self, payload: bytes, play_start: float) -> None:
        if self.speech_end is None or self.onset is not None:
            return
        from telebridge.audio.g711 import ulaw_decode_float

        rms = _frame_rms(ulaw_decode_float(payload))
        loud = np.flatnonzero(rms > LOUD_RMS)
        if loud.size:
            self.onset = play_start + int(loud[0]) * TICK
            self.onset_event.set()

    async def ask(self, frames: list[bytes], last_loud: int, timeout: float = 20.0) -> float | None:
        """Say the utterance once; seconds from its last loud frame leaving to the answer being heard."""
        loop = asyncio.get_running_loop()
        self.speech_end = None
        self.onset = None
        self.onset_event.clear()
        self.end_frame = self.frames_sent + len(self.pending) + last_loud
        self.pending.extend(frames)
        try:
            await asyncio.wait_for(self.onset_event.wait(), timeout)
        except TimeoutError:
            return None
        finally:
            self.end_frame = None
        assert self.onset is not None and self.speech_end is not None
        latency = self.onset - self.speech_end
        # let the answer finish playing before the next question
        while loop.time() < self.play_end + 0.8 or self.pending:
            await asyncio.sleep(0.1)
        return latency


class Generator:
    def __init__(self, cfg: GenConfig) -> None:
        self.cfg = cfg
        self.noise = _noise_frames(cfg.noise_dbfs, 10.0, cfg.seed)
        self.calls: list[LoadCall] = []
        self.failures: list[str] = []
        self.utterance: list[bytes] = []
        self.utterance_last_loud = 0
        self.window_started = 0.0

    def emit(self, event: str, **data: Any) -> None:
        print(json.dumps({"event": event, **data}), flush=True)

    async def prepare_probe(self) -> None:
        """Synthesize the probe sentence before any call is placed (model time must not disturb the pacing)."""
        from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode
        from telebridge.audio.resample import resample_once
        from telebridge.inference import InferencePool
        from telebridge.providers.tts.piper import PiperTTS

        pool = InferencePool("probe-tts", max_workers=1, max_pending=4)
        tts = PiperTTS(pool=pool, noise_scale=0.0, noise_w_scale=0.0)
        pcm = await tts.synthesize(PROBE_TEXT)
        pool.shutdown()
        audio = resample_once(np.asarray(pcm, np.float32) / 32768.0, tts.sample_rate, RATE)
        pad = (-len(audio)) % FRAME
        data = ulaw_encode(np.concatenate([audio, np.zeros(pad, np.float32)]))
        self.utterance = [data[i : i + FRAME] for i in range(0, len(data), FRAME)]
        loud = np.flatnonzero(_frame_rms(ulaw_decode_float(data)) > LOUD_RMS)
        self.utterance_last_loud = int(loud[-1]) if loud.size else len(self.utterance) - 1

    async def open_calls(self, http: Any) -> None:
        async def one(i: int) -> None:
            await asyncio.sleep(i * self.cfg.setup_spacing)
            call = LoadCall(self, i)
            try:
                await call.open(http)
                self.calls.append(call)
            except Exception as exc:  # noqa: BLE001 - report, do not hide: a refused call changes the figures
                self.failures.append(f"call {i}: {type(exc).__name__}: {exc}")

        await asyncio.gather(*(one(i) for i in range(self.cfg.calls)))

    async def probe(self, http: Any, repeats: int = 3) -> list[float | None]:
        call = ProbeCall(self, 10_000)
        await call.open(http)
        await asyncio.sleep(1.5)  # let the call set up and the VAD settle on the noise
        out: list[float | None] = []
        for _ in range(repeats):
            out.append(await call.ask(self.utterance, self.utterance_last_loud))
            await asyncio.sleep(0.5)
        await call.hangup()
        return out

    def window_stats(self) -> WindowStats:
        window = time.monotonic() - self.window_started
        lateness = np.array([x for c in self.calls for x in c.lateness]) if self.calls else np.zeros(1)
        if lateness.size == 0:
            lateness = np.zeros(1)
        ratios = [c.win_audio_samples / RATE / window for c in self.calls] or [0.0]
        starved = sum(c.win_starved for c in self.calls)
        return WindowStats(
            window_s=window,
            calls_streaming=sum(1 for c in self.calls if not c.closed_by_server),
            frames_sent=sum(c.win_frames for c in self.calls),
            late_p50_ms=float(np.percentile(lateness, 50) * 1000),
            late_p99_ms=float(np.percentile(lateness, 99) * 1000),
            late_max_ms=float(lateness.max() * 1000),
            agent_audio_ratio_mean=float(np.mean(ratios)),
            agent_audio_ratio_min=float(np.min(ratios)),
            starved_ms_per_call_s=1000 * starved / max(1e-9, len(self.calls) * window),
            marks_echoed=sum(c.win_marks for c in self.calls),
            server_msgs_per_call_s=sum(c.win_msgs for c in self.calls) / max(1e-9, len(self.calls) * window),
        )

    async def run(self) -> None:
        import httpx

        commands = stdin_commands(end="stop")
        if self.cfg.probe:
            await self.prepare_probe()
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            self.emit("hello")
            while True:
                cmd = await commands.get()
                if cmd == "open":
                    await self.open_calls(http)
                    self.emit("ready", calls=len(self.calls), failures=self.failures[:5])
                elif cmd == "start":
                    for c in self.calls:
                        c.begin_window()
                    self.window_started = time.monotonic()
                    self.emit("started")
                elif cmd == "end":
                    for c in self.calls:
                        c.end_window()
                    self.emit("ended", stats=self.window_stats().model_dump())
                elif cmd == "probe":
                    try:
                        lat = await self.probe(http)
                        self.emit("probe", latencies=lat)
                    except Exception as exc:  # noqa: BLE001 - a failed probe is reported, the run goes on
                        self.emit("probe", latencies=[], error=f"{type(exc).__name__}: {exc}")
                elif cmd == "stop":
                    await asyncio.gather(*(c.hangup() for c in self.calls), return_exceptions=True)
                    errors = [e for c in self.calls for e in c.protocol_errors][:10]
                    done = DoneStats(
                        protocol_errors=errors,
                        closed_by_server=sum(1 for c in self.calls if c.closed_by_server),
                        media_frames_received=sum(c.media_frames for c in self.calls),
                    )
                    self.emit("done", **done.model_dump())
                    return


def generator_main(cfg_json: str) -> None:
    cfg = GenConfig.model_validate_json(cfg_json)
    asyncio.run(Generator(cfg).run())


# =================================================================================================================
# The baseline sink server (its own process)
# =================================================================================================================


def sink_main(port: int, direct: bool = False) -> None:
    """The bare transport: uvicorn's own WebSocket protocol; the WebSocket only receives + json.loads. ``direct``:
    telebridge's protocol instead (``telebridge serve``'s: telebridge.websocket), each frame taken where it is
    parsed (the ``telebridge.direct`` extension) -- the same transport as the media route's."""
    import logging

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    from telebridge.twilio.twiml import connect_stream
    from telebridge.websocket import DIRECT, WebSocketProtocol

    logging.basicConfig(level=logging.WARNING)

    async def voice(request: Request) -> Response:
        form = await request.form()
        host = request.headers.get("host", f"127.0.0.1:{port}")
        params = {k: str(v) for k, v in form.items() if k in ("From", "To", "CallSid", "AccountSid")}
        twiml = connect_stream(f"ws://{host}/twilio/media", params, allow_insecure=True)
        return Response(twiml, media_type="application/xml")

    async def media(ws: WebSocket) -> None:
        await ws.accept()
        loads = json.loads
        if direct:

            def receiver(text: str) -> None:
                loads(text)

            ws.scope["extensions"][DIRECT]["set_receiver"](receiver)
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is not None:
                loads(text)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/twilio/voice", voice, methods=["POST"]),
            WebSocketRoute("/twilio/media", media),
            Route("/healthz", health),
        ]
    )
    from telebridge.cli import _has_sansio_ws

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        log_level="warning",
        ws=WebSocketProtocol if direct else "websockets-sansio" if _has_sansio_ws() else "websockets",
        ws_ping_interval=None,
        proxy_headers=True,
        forwarded_allow_ips="*",
    )


# =================================================================================================================
# The orchestrator: measures the server process
# =================================================================================================================

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat_fields(path: str) -> list[str]:
    with open(path) as f:
        text = f.read()
    return text[text.rindex(")") + 2 :].split()  # fields after "pid (comm) "


def proc_cpu(pid: int) -> float:
    """Seconds of user+sys CPU of a process (all its threads)."""
    f = _stat_fields(f"/proc/{pid}/stat")
    return (int(f[11]) + int(f[12])) / CLK_TCK


def thread_cpu(pid: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            f = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
            out[int(tid)] = (int(f[11]) + int(f[12])) / CLK_TCK
    return out


def machine_busy() -> float:
    """Busy CPU-seconds of the whole machine since boot (all cores)."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / CLK_TCK


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


SETTLE_MAX_S = 30.0  # the longest the window waits for the server's speech worker to finish its one-time work
SETTLE_IDLE_CPU_S = 0.02  # ... "idle": less CPU than this in a second


def settle_speech(pid: int, names: dict[int, str]) -> float:
    """Wait (at most :data:`SETTLE_MAX_S`) until the server's speech worker (Whisper/Piper) has been idle for a
    second; returns the seconds waited. What it does at a call's start is once per process: the talker's phrases,
    synthesized by Piper for the first call and cached for all (Pipecat's talker plays pre-rendered audio), which
    would otherwise land in the window by chance.
    Nothing to wait for without py-spy (no thread names) or a speech worker."""
    speech = [tid for tid, name in names.items() if name.startswith("infer-speech")]
    if not speech:
        return 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < SETTLE_MAX_S:
        before = thread_cpu(pid)
        time.sleep(1.0)
        after = thread_cpu(pid)
        if sum(after.get(t, 0.0) - before.get(t, 0.0) for t in speech) < SETTLE_IDLE_CPU_S:
            break
    return time.monotonic() - t0


def thread_names(pid: int) -> dict[int, str]:
    """OS thread id -> Python thread name, via ``py-spy dump`` (empty if py-spy is unavailable)."""
    spy = py_spy()
    if spy is None:
        return {}
    try:
        out = subprocess.run([spy, "dump", "--pid", str(pid), "--json", "--nonblocking"],
                             capture_output=True, text=True, timeout=30, check=False)
        return {int(t["os_thread_id"]): str(t.get("thread_name") or "?") for t in json.loads(out.stdout)
                if t.get("os_thread_id") is not None}
    except (subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return {}


def thread_group(tid: int, pid: int, names: dict[int, str]) -> str:
    if tid == pid:
        return "loop"
    name = names.get(tid, "")
    if name.startswith("infer-vad"):
        return "vad"
    if name.startswith("infer-speech"):
        return "speech"
    if not name:
        return "native"  # threads Python does not know: onnxruntime / CTranslate2 / BLAS pools
    return "other"


class LineReader:
    """Reads a child's JSON-line stdout on a thread, so waits can time out."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"generator did not send {event!r} within {timeout:.0f} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"generator exited (code {self.proc.poll()}) while waiting for {event!r}")
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict) and msg.get("event") == event:
                    return msg

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()


class HealthPoller:
    """GET /healthz every ``interval`` s on a keep-alive connection: round trips show event-loop lag."""

    def __init__(self, port: int, interval: float = 0.1) -> None:
        self.port = port
        self.interval = interval
        self.rtts: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                self.rtts.append(time.perf_counter() - t0)
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self._stop.wait(self.interval)
        conn.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def summary(self) -> tuple[float, float, float]:
        if not self.rtts:
            return (math.nan, math.nan, math.nan)
        a = np.array(self.rtts) * 1000
        return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


@dataclass
class Row:
    scenario: Scenario
    n: int
    window_s: float = 0.0
    server_cpu_s: float = 0.0
    groups: dict[str, float] = field(default_factory=dict)  # thread group -> CPU seconds
    gen_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0
    stats: WindowStats | None = None
    health: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    vad_drops: int = 0
    server_errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    done: DoneStats | None = None
    probe_idle: list[float | None] = field(default_factory=list)
    probe_loaded: list[float | None] = field(default_factory=list)
    profile: str = ""
    lingering: int = 0  # calls the server still listed 10 s after every caller hung up
    behind_s: float | None = None  # pipecat: how far its slowest call's inbound audio trailed real time at the end
    processed_s: float | None = None  # pipecat: caller audio its calls processed over the window (all calls)
    fakes_cpu_s: float = 0.0  # cloud: the fakes process's CPU over the window (not the server's)
    fakes_stats: dict[str, Any] = field(default_factory=dict)  # cloud: the fakes' counters at the end
    paced_cpu_s: float | None = None  # floor: the same work in real time (bench_floor.py --paced)
    settled_s: float = 0.0  # how long the window waited for the speech worker's one-time work (settle_speech)

    def _per_call_s(self, cpu_s: float) -> float:
        """CPU ms per call-second of ``cpu_s`` seconds of CPU over this row's calls and window."""
        return 1000 * cpu_s / max(1e-9, self.n * self.window_s)

    @property
    def ms_per_call_s(self) -> float:
        return self._per_call_s(self.server_cpu_s)

    @property
    def paced_ms_per_call_s(self) -> float | None:
        """Floor: CPU per call-second of the same work done in real time, frame by frame as it is due."""
        return None if self.paced_cpu_s is None else self._per_call_s(self.paced_cpu_s)

    @property
    def ms_per_processed_s(self) -> float | None:
        """Pipecat: server CPU per second of caller audio it processed over the window (its real cost per
        call-second when it falls behind, where the wall-clock figure is capped by the one core it can use)."""
        if not self.processed_s:
            return None
        return 1000 * self.server_cpu_s / self.processed_s

    def group_ms(self, name: str) -> float:
        return self._per_call_s(self.groups.get(name, 0.0))


@contextlib.contextmanager
def server_process(
    scenario: Scenario,
    port: int,
    token: str,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    profile_to: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TWILIO_AUTH_TOKEN=token,
        TELEBRIDGE_LOG_LEVEL="warning",
        TELEBRIDGE_MAX_CALLS="200",
        TELEBRIDGE_DRAIN_TIMEOUT="3",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    for key in ("TELEBRIDGE_PUBLIC_URL", "TELEBRIDGE_AGENT", "OPENAI_API_KEY", "TELEBRIDGE_LLM_BASE_URL"):
        env.pop(key, None)
    env.update(extra_env or {})
    if scenario in ("baseline", "baseline-direct"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--sink", "--port", str(port)]
        if scenario == "baseline-direct":
            cmd.append("--sink-direct")
    elif scenario.startswith("pipecat"):
        from bench.pipecat_setup import pipecat_python, talker_audio  # Pipecat runs from its own venv

        cmd = [str(pipecat_python()), str(ROOT / "bench" / "pipecat_server.py"), "--port", str(port)]
        if scenario in TALKING:
            cmd += ["--talk", str(talker_audio(log_path.parent / "talker-8k.pcm"))]
    else:
        serve = ["serve", "--agent", str(AGENT_FILES[scenario]), "--port", str(port)]
        cmd = [sys.executable, "-m", "telebridge", *serve]
        if profile_to is not None:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--profiled-serve", str(profile_to), "--", *serve]
    with served(cmd, env, log_path, port) as proc:
        yield proc


def stdin_commands(end: str) -> asyncio.Queue[str]:
    """A generator process's commands, one per line of stdin (read in a thread); ``end`` when stdin closes."""
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, end)

    threading.Thread(target=read_stdin, daemon=True).start()
    return commands


@contextlib.contextmanager
def served(cmd: list[str], env: dict[str, str], log_path: Path, port: int, *, append: bool = False,
           healthy_within: float = 180.0, stop_within: float = 20.0) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server command (its output to ``log_path``) until it is healthy on ``port``; SIGTERM it afterwards
    (killed if it has not stopped ``stop_within`` seconds later)."""
    with open(log_path, "ab" if append else "wb") as log:
        # cwd = a scratch dir: no stray .env is read; the agent path is absolute.
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent)
        try:
            _wait_healthy(proc, port, timeout=healthy_within)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=stop_within)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _healthz(port: int) -> dict[str, Any]:
    """One ``GET /healthz`` (empty if it fails)."""
    with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        body = json.loads(conn.getresponse().read())
        conn.close()
        return body if isinstance(body, dict) else {}
    return {}


def _lingering_calls(port: int, wait: float) -> int:
    """Live calls /healthz still reports ``wait`` s after all callers hung up (0 = every call cleaned up)."""
    deadline = time.monotonic() + wait
    calls = 0
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            calls = int(json.loads(conn.getresponse().read()).get("calls", 0))
            conn.close()
        if calls == 0 or time.monotonic() > deadline:
            return calls
        time.sleep(0.25)


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before becoming healthy")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        time.sleep(0.2)
    raise TimeoutError("server did not answer /healthz")


@contextlib.contextmanager
def generator_process(cfg: GenConfig, log_path: Path) -> Iterator[tuple[subprocess.Popen[str], LineReader]]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--generate", cfg.model_dump_json()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=log_path.parent,
        )
        reader = LineReader(proc)
        try:
            yield proc, reader
        finally:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    assert proc.stdin is not None
                    proc.stdin.close()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def run_scenario(scenario: Scenario, n: int, *, ramp: float, window: float, probe: bool, profile_s: float,
                 workdir: Path, server_env: dict[str, str] | None = None, cloud_chunk_ms: int = 100,
                 cloud_deflate: bool = True) -> Row:
    if scenario == "floor":
        return run_floor(n, window, vad_rate(server_env or {}))
    if scenario != "cloud":
        return _run_scenario(scenario, n, ramp=ramp, window=window, probe=probe, profile_s=profile_s,
                             workdir=workdir, server_env=server_env)
    from bench.cloud_fakes import fakes_process  # the cloud scenario's own pieces live there

    with fakes_process(free_port(), workdir / f"fakes-{scenario}-{n}.log", chunk_ms=cloud_chunk_ms,
                       deflate=cloud_deflate) as fakes:
        row = _run_scenario(scenario, n, ramp=ramp, window=window, probe=probe, profile_s=profile_s,
                            workdir=workdir, server_env={**(server_env or {}), **fakes.server_env},
                            other_pids=[fakes.proc.pid])
        row.fakes_stats = fakes.stats()
    return row


def run_floor(n: int, seconds: float, rate: int) -> Row:
    """The inbound path's numeric work for ``n`` calls, batched, no server (``bench/bench_floor.py``, own process),
    with Silero at ``rate`` as the bench agents run it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_floor.py"), "--n", str(n), "--seconds",
                          str(seconds), "--rate", str(rate), "--paced", "--json"],
                         capture_output=True, text=True, env=env, check=True, timeout=600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    paced = result.get("paced_cpu_s")
    return Row("floor", n, window_s=float(result["seconds"]), server_cpu_s=float(result["cpu_s"]),
               paced_cpu_s=float(paced) if paced is not None else None)


def _run_scenario(scenario: Scenario, n: int, *, ramp: float, window: float, probe: bool, profile_s: float,
                  workdir: Path, server_env: dict[str, str] | None = None, other_pids: list[int] | None = None) -> Row:
    row = Row(scenario, n)
    port = free_port()
    token = secrets.token_hex(16)
    server_log = workdir / f"server-{scenario}-{n}.log"
    gen_log = workdir / f"generator-{scenario}-{n}.log"
    probe = probe and scenario in LISTENING
    echo_db, echo_delay = LINE_ECHO.get(scenario, (None, 0.25))
    cfg = GenConfig(url=f"http://127.0.0.1:{port}", token=token, calls=n, probe=probe, echo_db=echo_db,
                    echo_delay=echo_delay)
    if scenario in ECHO_OFF:
        server_env = {**(server_env or {}), "BENCH_ECHO_GUARD": "0"}
    if scenario == "inbound-awake":  # every call's windows at every tick, as if someone might speak any moment
        server_env = {**(server_env or {}), "TELEBRIDGE_VAD_REST_TICKS": "1"}
    profiled = profile_s > 0 and not scenario.startswith("baseline")
    profile_to = workdir / f"profile-{scenario}-{n}.pstats" if profiled else None
    with server_process(scenario, port, token, server_log, server_env, profile_to) as server, generator_process(cfg, gen_log) as (gen, io):
        io.expect("hello", timeout=120)
        if probe:
            io.send("probe")
            row.probe_idle = io.expect("probe", timeout=120)["latencies"]
        io.send("open")
        ready = io.expect("ready", timeout=60 + n * 2)
        row.failures = ready["failures"]
        time.sleep(ramp)
        names = thread_names(server.pid)
        row.settled_s = settle_speech(server.pid, names)
        cpu0, thr0, gen0, mach0 = proc_cpu(server.pid), thread_cpu(server.pid), proc_cpu(gen.pid), machine_busy()
        fakes0 = sum(proc_cpu(pid) for pid in other_pids or [])
        audio0 = _healthz(port).get("audio_s") if scenario.startswith("pipecat") else None
        io.send("start")
        io.expect("started", timeout=10)
        t0 = time.monotonic()
        with HealthPoller(port) as poller:
            time.sleep(window)
            io.send("end")
            cpu1, thr1, gen1, mach1 = proc_cpu(server.pid), thread_cpu(server.pid), proc_cpu(gen.pid), machine_busy()
            row.fakes_cpu_s = sum(proc_cpu(pid) for pid in other_pids or []) - fakes0
            row.window_s = time.monotonic() - t0
            health = _healthz(port)
            row.behind_s = health.get("behind_s")
            if audio0 is not None and health.get("audio_s") is not None:
                row.processed_s = health["audio_s"] - audio0
        row.health = poller.summary()
        row.stats = WindowStats.model_validate(io.expect("ended", timeout=30)["stats"])
        row.window_s = row.stats.window_s  # the callers' own window (within a few ms of ours)
        row.server_cpu_s = cpu1 - cpu0
        row.gen_cpu_s = gen1 - gen0
        row.machine_cpu_s = mach1 - mach0
        if not names:
            names = thread_names(server.pid)
        for tid, after in thr1.items():
            group = thread_group(tid, server.pid, names)
            row.groups[group] = row.groups.get(group, 0.0) + after - thr0.get(tid, 0.0)
        if profile_to is not None:
            row.profile = profile_server(server.pid, profile_s, profile_to)
        if probe:
            io.send("probe")
            row.probe_loaded = io.expect("probe", timeout=120)["latencies"]
        io.send("stop")
        row.done = DoneStats.model_validate(io.expect("done", timeout=60))
        row.lingering = _lingering_calls(port, wait=10.0)
    text = server_log.read_text(errors="replace")
    row.vad_drops = text.count("fell behind")
    row.server_errors = [ln for ln in text.splitlines() if "ERROR" in ln or "Traceback" in ln][:5]
    return row


# =================================================================================================================
# Profiling (cProfile on the server's event-loop thread, switched on and off by signals)
# =================================================================================================================


def profiled_serve(argv: list[str], out_path: str) -> None:
    """``telebridge serve`` with a dormant cProfile: SIGUSR1 starts it, SIGUSR2 stops it and writes pstats.

    Why cProfile and not a sampler: the event-loop thread is the one that runs every call's per-frame code, and
    cProfile (which only profiles the thread that enables it -- the signal handler runs on the main thread, the
    loop's) gives exact call counts and time per call for it. It stays off during the CPU window, so the measured
    figures carry no profiler overhead. The other threads run ONNX (VAD, Piper) and are attributed by
    /proc/<pid>/task instead.
    """
    import cProfile

    prof = cProfile.Profile()

    def start(signum: int, frame: object) -> None:
        prof.enable()

    def stop(signum: int, frame: object) -> None:
        prof.disable()
        prof.dump_stats(out_path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from telebridge.cli import main as telebridge_main

    sys.exit(telebridge_main(argv))


def profile_server(pid: int, seconds: float, out_path: Path) -> str:
    """Profile the server's event loop for ``seconds`` (it must run under :func:`profiled_serve`)."""
    out_path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    time.sleep(seconds)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 20
    while not out_path.exists() or out_path.stat().st_size == 0:
        if time.monotonic() > deadline:
            return "profile: the server wrote no stats"
        time.sleep(0.1)
    time.sleep(0.3)  # let the write finish
    return summarise_profile(out_path, seconds)


_WAITING = ("select", "poll", "epoll", "run_forever", "_run_once", "run_until_complete")


def _label(func: tuple[str, int, str]) -> str:
    path, line, name = func
    if path == "~":
        return name  # a C function, e.g. <built-in method json.loads>
    parts = Path(path).parts
    return f"{name} ({'/'.join(parts[-2:])}:{line})"


def summarise_profile(stats_path: Path, seconds: float, top: int = 22) -> str:
    """Top functions of the loop thread by self time and by inclusive time, as % of its busy time."""
    import pstats

    st = pstats.Stats(str(stats_path))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = st.stats  # type: ignore[attr-defined]
    waiting = sum(tt for f, (_, _, tt, _, _) in raw.items() if any(w in f[2] for w in _WAITING[:3]))
    busy = sum(tt for _, (_, _, tt, _, _) in raw.items()) - waiting
    if busy <= 0:
        return "profile: no samples"
    head = (
        f"cProfile of the event-loop thread over {seconds:.0f} s: busy {busy:.2f} s "
        f"({100 * busy / seconds:.0f}% of one core, incl. profiler overhead), waiting in epoll {waiting:.2f} s"
    )
    lines = [head]
    lines.append("  SELF time (tottime), % of busy time | calls/s | µs per call:")
    by_self = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)
    shown = 0
    for func, (_, calls, tt, _, _) in by_self:
        if any(w in func[2] for w in _WAITING[:3]):
            continue
        lines.append(f"    {100 * tt / busy:5.1f}%  {calls / seconds:8.0f}/s  {1e6 * tt / max(1, calls):7.1f} µs  "
                     f"{_label(func)}")
        shown += 1
        if shown >= top:
            break
    lines.append("  INCLUSIVE time (cumtime), % of busy time:")
    by_cum = sorted(raw.items(), key=lambda kv: kv[1][3], reverse=True)
    shown = 0
    for func, (_, calls, _, ct, _) in by_cum:
        if any(w in func[2] for w in _WAITING) or ct > busy * 1.05:
            continue  # the loop machinery itself (its cumtime includes waiting)
        lines.append(f"    {100 * ct / busy:5.1f}%  {calls / seconds:8.0f}/s  {_label(func)}")
        shown += 1
        if shown >= top + 6:
            break
    return "\n".join(lines)


# =================================================================================================================
# Report
# =================================================================================================================


def _fmt_probe(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not values:
        return "-"
    text = "/".join(f"{v * 1000:.0f}" for v in got) or "none"
    missing = len(values) - len(got)
    return text + (f" (+{missing} unanswered)" if missing else "")


def _cloud_note(tag: str, r: Row) -> str:
    """What the Deepgram fakes saw: proof that audio really streamed both ways during the cloud run."""
    s = r.fakes_stats
    text = f"{tag}: fakes process {100 * r.fakes_cpu_s / max(1e-9, r.window_s):.0f}% of a core (not counted)"
    if not s:
        return text + "; the fakes reported no counters"
    return (text + f"; whole run: {s.get('listen_sockets', 0)} listen + {s.get('speak_sockets', 0)} speak sockets, "
            f"{s.get('audio_in_bytes', 0) / 8000:.0f} s of caller audio in, "
            f"{s.get('audio_out_bytes', 0) / 8000:.0f} s of TTS audio out (μ-law s), {s.get('flushes', 0)} sentences, "
            f"{s.get('results_sent', 0)} results, {s.get('refused', 0)} refused")


def print_echo_cost(rows: list[Row]) -> None:
    """The echo canceller's cost: each duplex scenario against the same one with the energy guard instead, same N."""
    by = {(r.scenario, r.n): r for r in rows}
    pairs = [(on, f"{on}-off", n) for (on, n) in by if on in ("duplex", "duplex-echo") and (f"{on}-off", n) in by]
    if not pairs:
        return
    print()
    print("Echo canceller on vs off, same run (server CPU ms per call-second; loop = the event-loop thread, where it "
          "runs)")
    head = f"{'N':>3}  {'line':12} {'on':>7} {'off':>7} {'added':>7} {'ratio':>6}   {'loop on':>7} {'loop off':>8}"
    print(head)
    print("-" * len(head))
    for on, off, n in sorted(pairs, key=lambda p: (p[2], p[0])):
        a, b = by[(on, n)], by[(off, n)]
        marks = ["*" if fell_behind(r, True) else " " for r in (a, b)]
        line = "echo 12 dB" if on == "duplex-echo" else "noise only"
        print(f"{n:3d}  {line:12} {a.ms_per_call_s:6.2f}{marks[0]} {b.ms_per_call_s:6.2f}{marks[1]} "
              f"{a.ms_per_call_s - b.ms_per_call_s:7.2f} {a.ms_per_call_s / max(b.ms_per_call_s, 1e-9):5.2f}x   "
              f"{a.group_ms('loop'):7.2f} {b.group_ms('loop'):8.2f}")


def print_report(rows: list[Row], baseline: dict[int, float]) -> None:
    print()
    print("Server CPU per second of call audio (user+sys of the server process over the window)")
    head = (f"{'scenario':15} {'N':>3} {'CPU ms/call-s':>13} {'x base':>7} {'calls/core':>10} {'gen late p99':>12} "
            f"{'agent audio (duplex), msg/s':>30}")
    print(head)
    print("-" * len(head))
    for r in rows:
        ms = r.ms_per_call_s
        base = baseline.get(r.n)
        ratio = f"{ms / base:6.1f}x" if base and r.scenario not in ("baseline", "floor") else "      -"
        ratio_audio = "-"
        if r.stats and r.scenario in TALKING:
            ratio_audio = f"{r.stats.agent_audio_ratio_mean:.2f} (min {r.stats.agent_audio_ratio_min:.2f})"
            ratio_audio += f", {r.stats.server_msgs_per_call_s:.1f}/s"
        late = f"{r.stats.late_p99_ms:9.1f} ms" if r.stats else "-"
        print(f"{r.scenario:15} {r.n:3d} {ms:13.2f} {ratio:>7} {1000 / max(ms, 1e-9):10.0f} {late:>12} "
              f"{ratio_audio:>30}")
    print("('x base' = ratio to the bare Starlette/uvicorn WebSocket sink at the same N; floor = no server, CPU of "
          "the batched inbound numeric work per call-second of audio)")
    print_comparison(rows, TARGET_RATIO, PIPECAT, TALKING)
    print_echo_cost(rows)
    print()
    print("Where the server CPU went (ms per call-second, by thread) and lag signals seen from outside")
    head2 = (f"{'scenario':15} {'N':>3} {'loop':>6} {'vad':>6} {'speech':>7} {'native':>7} {'other':>6} "
             f"{'healthz p50/p99/max ms':>23} {'starved':>8} {'VAD drops':>9} {'late max':>9} {'gen CPU':>8} "
             f"{'other load':>10}")
    print(head2)
    print("-" * len(head2))
    for r in (r for r in rows if r.scenario != "floor"):
        h50, h99, hmax = r.health
        starved = f"{r.stats.starved_ms_per_call_s:5.1f}ms" if r.stats and r.scenario in TALKING else "-"
        gen_pct = 100 * r.gen_cpu_s / max(1e-9, r.window_s)
        other = r.machine_cpu_s - r.server_cpu_s - r.gen_cpu_s - r.fakes_cpu_s
        late_max = f"{r.stats.late_max_ms:6.0f}ms" if r.stats else "-"
        print(f"{r.scenario:15} {r.n:3d} {r.group_ms('loop'):6.2f} {r.group_ms('vad'):6.2f} {r.group_ms('speech'):7.2f} "
              f"{r.group_ms('native'):7.2f} {r.group_ms('other'):6.2f} "
              f"{f'{h50:.1f}/{h99:.1f}/{hmax:.0f}':>23} {starved:>8} {r.vad_drops:9d} {late_max:>9} "
              f"{gen_pct:7.0f}% {max(0.0, 100 * other / max(1e-9, r.window_s)):9.0f}%")
    print("(loop = event-loop thread: WebSocket I/O, decoding, μ-law/resampling, segmenter, pacing; vad = batched "
          "Silero thread; speech = Whisper/Piper workers; native = ONNX Runtime/CTranslate2 pools; "
          "starved = agent playback gaps per call-second; other load = CPU used by other processes on the box, "
          "in % of one core; cloud: not counting the fakes process, noted below; pipecat: its per-call VAD "
          "threads and ONNX Runtime show as native)")
    notes = []
    for r in rows:
        tag = f"{r.scenario} N={r.n}"
        if r.failures:
            notes.append(f"{tag}: {len(r.failures)} call(s) failed to start, e.g. {r.failures[0]}")
        if r.stats and r.stats.calls_streaming < r.n:
            notes.append(f"{tag}: only {r.stats.calls_streaming}/{r.n} calls were still streaming at the end")
        if r.done and r.done.protocol_errors:
            notes.append(f"{tag}: Twilio protocol errors: {r.done.protocol_errors[:3]}")
        if r.done and r.done.closed_by_server:
            notes.append(f"{tag}: server closed {r.done.closed_by_server} call(s)")
        if r.lingering:
            notes.append(f"{tag}: {r.lingering} call(s) still registered 10 s after every caller hung up "
                         "(session cleanup is stuck)")
        if r.server_errors:
            notes.append(f"{tag}: server log: {r.server_errors[0][:200]}")
        if r.scenario == "cloud":
            notes.append(_cloud_note(tag, r))
        if r.behind_s is not None and r.behind_s > 0.5:
            notes.append(f"{tag}: the slowest call's caller audio got through the VAD {r.behind_s:.1f} s behind "
                         "real time at the end of the window (the server did not keep up)")
        if r.settled_s > 1.5:
            notes.append(f"{tag}: the window started {r.settled_s:.0f} s after the ramp, once the speech worker's "
                         "one-time work (the agent's phrases, synthesized once and cached) was done")
        if r.scenario in LISTENING and r.done and r.done.media_frames_received:
            notes.append(f"{tag}: the listener sent {r.done.media_frames_received} media frames (noise started turns?)")
    probes = [r for r in rows if r.probe_idle or r.probe_loaded]
    if probes:
        print()
        print("Probe: one extra caller asks a question; ms from the end of its speech to the onset of the answer "
              "(endpointing 0.55 s + STT + TTS + any lag the load adds)")
        for r in probes:
            print(f"  {r.scenario} N={r.n}: idle {_fmt_probe(r.probe_idle)}   with {r.n} calls "
                  f"{_fmt_probe(r.probe_loaded)}")
    if notes:
        print()
        print("Notes:")
        for note in notes:
            print("  " + note)
    for r in rows:
        if r.profile:
            print()
            print(f"Profile: {r.scenario} N={r.n}")
            print(r.profile)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N=10 only, short ramp and window")
    ap.add_argument("--n", default="10,25,50", help="comma-separated numbers of concurrent calls")
    ap.add_argument("--window", type=float, default=20.0, help="measurement window, seconds")
    ap.add_argument("--ramp", type=float, default=5.0, help="seconds between the last call starting and the window")
    ap.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                    help=f"comma-separated, of {','.join(SCENARIOS)}")
    ap.add_argument("--no-probe", action="store_true", help="skip the response-latency probe (inbound)")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile the server's event loop after the window, at the largest N")
    ap.add_argument("--profile-seconds", type=float, default=10.0)
    ap.add_argument("--keep-logs", action="store_true", help="keep server/generator logs and profiles")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the server (experiments, e.g. OPENBLAS_NUM_THREADS=1)")
    ap.add_argument("--cloud-chunk-ms", type=int, default=100,
                    help="cloud: milliseconds of audio per TTS binary message from the fake Deepgram")
    ap.add_argument("--cloud-no-deflate", action="store_true",
                    help="cloud: the fakes refuse permessage-deflate (the clients offer it; measures its cost)")
    # internal modes
    ap.add_argument("--generate", metavar="CONFIG_JSON", help=argparse.SUPPRESS)
    ap.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sink-direct", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--profiled-serve", metavar="PSTATS_PATH", help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    if "--profiled-serve" in argv and "--" in argv:  # internal: everything after "--" goes to telebridge
        cut = argv.index("--")
        profiled_serve(argv[cut + 1 :], argv[argv.index("--profiled-serve") + 1])
        return
    args = ap.parse_args()

    if args.generate:
        generator_main(args.generate)
        return
    if args.sink:
        sink_main(args.port, direct=args.sink_direct)
        return

    ns = [10] if args.quick else [int(x) for x in args.n.split(",") if x.strip()]
    window = min(args.window, 8.0) if args.quick else args.window
    ramp = min(args.ramp, 3.0) if args.quick else args.ramp
    scenarios = [s for s in SCENARIOS if s in args.scenarios.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="telebridge-bench-"))
    server_env = dict(kv.split("=", 1) for kv in args.server_env)
    print(f"cpu_per_call: N={ns}, ramp {ramp:.0f} s, window {window:.0f} s, scenarios {scenarios}, "
          f"{os.cpu_count()} CPUs; noise {NOISE_DBFS:.0f} dBFS; logs in {workdir}", flush=True)
    rows: list[Row] = []
    baseline: dict[int, float] = {}
    for n in ns:
        for scenario in scenarios:
            print(f"  running {scenario} with {n} calls ...", flush=True)
            profile_s = args.profile_seconds if args.profile and n == max(ns) and scenario in AGENT_FILES else 0.0
            try:
                row = run_scenario(scenario, n, ramp=ramp, window=window, probe=not args.no_probe,
                                   profile_s=profile_s, workdir=workdir, server_env=server_env,
                                   cloud_chunk_ms=args.cloud_chunk_ms, cloud_deflate=not args.cloud_no_deflate)
            except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others' figures
                print(f"  {scenario} N={n} FAILED: {type(exc).__name__}: {exc} (logs in {workdir})", flush=True)
                continue
            rows.append(row)
            if scenario == "baseline":
                baseline[n] = row.ms_per_call_s
            print(f"    {row.ms_per_call_s:.2f} ms per call-second", flush=True)
    print_report(rows, baseline)
    if not args.keep_logs and all(not r.server_errors and not r.failures for r in rows) and len(rows) == len(ns) * len(scenarios):
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
