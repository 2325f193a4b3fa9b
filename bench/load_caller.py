"""The load generator of ``bench/load.py``: callers that hold a conversation, in their own process(es).

Each caller is ``bench/cpu_per_call.py``'s :class:`~bench.cpu_per_call.LoadCall` (a signed webhook, a signed Media
Streams WebSocket, 20 ms μ-law frames paced against absolute deadlines, Twilio-like mark echoes and ``clear``
handling), made to talk: over line noise it asks a question (a pre-synthesized sentence, ~2 s) about every
``question_every`` seconds (jittered), once the agent has finished answering, and every ``barge_in_every``-th
question is asked 1.5 s into the agent's answer instead (a barge-in: the agent must stop, a ``clear``, and answer
again). Per call it observes:

* **answers**: a question is answered when audio of a new agent turn arrives (turn ids come from the marks'
  names, ``t<turn>-<offset>``); its latency is the end of the question's last loud frame to that audio;
  unanswered within :data:`ANSWER_TIMEOUT` counts as a failure;
* **starved**: within one agent turn, time during which the caller's playback buffer ran dry before the next
  chunk came (an audible gap); agent audio real-time ratio = audio ÷ (audio + starved) (1.00 = real time);
* **lateness**: how late its own 20 ms sends were (proves the load itself was real time).

Commands on stdin (one per line) and JSON-line answers on stdout, like ``cpu_per_call.py``'s generator:
``open N`` (place N more calls; ``ready``), ``start`` / ``end`` (a measurement window; ``ended`` with its stats),
``hangup`` (every call hangs up; ``done``), ``quit``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cpu_per_call import (  # noqa: E402
    FRAME, LOUD_RMS, NOISE_DBFS, RATE, LoadCall, _frame_rms, _noise_frames, stdin_commands,
)

QUESTION = "What are your opening hours, and where can I find you?"
BARGE_IN = "Sorry, one more thing, do you open on Sundays?"
ANSWER_TIMEOUT = 8.0  # seconds from the end of a question to the first audio of the answer
CLEAR_TIMEOUT = 3.0  # seconds from a barge-in's onset to the server's clear
LATE_BINS = np.arange(0.0, 1000.5, 0.5)  # ms: histogram edges of send lateness (merged across generators)


class CallerConfig(BaseModel):
    urls: list[str]  # servers; call i dials urls[i % len(urls)]
    token: str
    first_index: int = 0
    question_every: float = 10.0
    barge_in_every: int = 5  # every n-th question barges in (0: never)
    setup_spacing: float = 0.03
    seed: int = 1
    noise_dbfs: float = NOISE_DBFS


class CallerStats(BaseModel):
    """One measurement window, one generator process (merged by the orchestrator)."""

    window_s: float = 0.0
    calls: int = 0
    streaming: int = 0
    late_hist: list[int] = []
    late_max_ms: float = 0.0
    questions: int = 0
    answered: int = 0
    unanswered: int = 0
    answer_latency_s: list[float] = []
    barge_ins: int = 0
    cleared: int = 0
    agent_audio_s: float = 0.0
    starved_s: float = 0.0
    worst_ratio: float = 1.0


class HangupStats(BaseModel):
    calls: int
    closed_by_server: int
    protocol_errors: list[str]
    questions: int
    answered: int
    unanswered: int
    failures: list[str]


@dataclass
class _Cfg:  # what LoadCall reads from its generator: ``cfg.url``, ``cfg.token`` (and no line echo)
    url: str
    token: str
    echo_db: float | None = None
    echo_delay: float = 0.0


class _Target:
    """LoadCall's view of "its generator": one server's URL, the token and the shared noise."""

    def __init__(self, url: str, token: str, noise: list[bytes]) -> None:
        self.cfg = _Cfg(url, token)
        self.noise = noise


class Utterance:
    def __init__(self, frames: list[bytes], last_loud: int) -> None:
        self.frames = frames
        self.last_loud = last_loud


class ConversationCall(LoadCall):
    """A LoadCall that asks questions, barges in now and then, and watches the answers (see the module doc)."""

    def __init__(self, target: _Target, index: int, gen: Generator) -> None:
        super().__init__(target, index)  # type: ignore[arg-type]
        self.owner = gen
        self.rng = random.Random(gen.cfg.seed * 100_003 + index)
        self.turn = -1  # newest agent turn id heard
        self.turn_onset = 0.0
        self.new_turn = asyncio.Event()
        self.clear_event = asyncio.Event()
        self._pending_gap = 0.0
        self._last_media_at = 0.0
        self.speech_end_frame: int | None = None
        self.speech_end: float | None = None
        self.question_count = 0
        self.answered_total = 0
        self.unanswered_total = 0
        self.failures: list[str] = []
        # window accounting (besides LoadCall's lateness)
        self.w_questions = self.w_answered = self.w_unanswered = self.w_barge = self.w_cleared = 0
        self.w_latency: list[float] = []
        self.w_audio = 0.0
        self.w_starved = 0.0

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def begin_window(self) -> None:
        super().begin_window()
        self.w_questions = self.w_answered = self.w_unanswered = self.w_barge = self.w_cleared = 0
        self.w_latency = []
        self.w_audio = self.w_starved = 0.0

    def on_sent_hook(self, frame_index: int, now: float) -> None:
        if self.speech_end_frame is not None and frame_index == self.speech_end_frame:
            self.speech_end = now

    async def receive(self) -> None:
        """Like LoadCall's, plus turn tracking from the marks and starvation within a turn."""
        from websockets.exceptions import ConnectionClosed

        from telebridge.simulator.wire import (
            ServerClear, ServerMark, ServerMedia, TwilioProtocolError, decode_server_message,
        )

        loop = asyncio.get_running_loop()
        try:
            async for frame in self.ws:
                now = loop.time()
                try:
                    msg = decode_server_message(frame, expected_stream_sid=self.stream_sid)
                except TwilioProtocolError as exc:
                    if len(self.protocol_errors) < 5:
                        self.protocol_errors.append(f"{exc.code}: {exc.message}")
                    continue
                if isinstance(msg, ServerMedia):
                    n = len(msg.payload) / RATE
                    self._pending_gap = max(0.0, now - self.play_end) if self.media_frames else 0.0
                    self._last_media_at = now
                    self.play_end = max(self.play_end, now) + n
                    self.media_frames += 1
                    if self.window_open:
                        self.w_audio += n
                elif isinstance(msg, ServerMark):
                    self.due_marks.append((max(self.play_end, now), msg.name))
                    turn = _turn_of(msg.name)
                    if turn is None:
                        continue
                    if turn == self.turn:
                        if self.window_open:
                            self.w_starved += self._pending_gap
                    elif turn > self.turn:
                        self.turn = turn
                        self.turn_onset = self._last_media_at
                        self.new_turn.set()
                    self._pending_gap = 0.0
                elif isinstance(msg, ServerClear):
                    self.play_end = now
                    self.due_marks = collections.deque((now, name) for _, name in self.due_marks)
                    self.clear_event.set()
        except ConnectionClosed:
            pass
        finally:
            if not self.stopping:
                self.closed_by_server = True

    # -- talking -----------------------------------------------------------------------------------------------
    def agent_quiet_for(self, seconds: float) -> bool:
        return asyncio.get_running_loop().time() >= self.play_end + seconds

    async def say(self, utterance: Utterance) -> None:
        """Queue the utterance; returns once its last loud frame has been sent (``speech_end`` set)."""
        self.speech_end = None
        self.speech_end_frame = self.frames_sent + len(self.pending) + utterance.last_loud
        self.pending.extend(utterance.frames)
        while self.speech_end is None and not self.stopping and not self.closed_by_server:
            await asyncio.sleep(0.02)

    async def wait_answer(self, asked_turn: int) -> float | None:
        """Seconds from the end of the question to the first audio of a new agent turn (None: unanswered)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ANSWER_TIMEOUT
        while self.turn <= asked_turn:
            self.new_turn.clear()
            left = deadline - loop.time()
            if left <= 0 or self.stopping or self.closed_by_server:
                return None
            try:
                await asyncio.wait_for(self.new_turn.wait(), left)
            except TimeoutError:
                return None
        assert self.speech_end is not None
        return max(0.0, self.turn_onset - self.speech_end)

    def _count(self, answered: float | None, what: str) -> None:
        self.question_count += 1
        if self.window_open:
            self.w_questions += 1
        if answered is None:
            self.unanswered_total += 1
            if len(self.failures) < 3:
                self.failures.append(f"call {self.index}: {what} unanswered within {ANSWER_TIMEOUT:.0f} s")
            if self.window_open:
                self.w_unanswered += 1
        else:
            self.answered_total += 1
            if self.window_open:
                self.w_answered += 1
                self.w_latency.append(answered)

    async def converse(self) -> None:
        """Greeting, then a question every ~question_every s; every n-th one barges in on the answer."""
        loop = asyncio.get_running_loop()
        gen = self.owner
        try:
            await asyncio.sleep(1.0)
            while not self.agent_quiet_for(0.4):  # the greeting plays out
                await asyncio.sleep(0.1)
            next_at = loop.time() + self.rng.uniform(0.5, gen.cfg.question_every)  # spread the calls' phases
            n = 0
            while not self.stopping and not self.closed_by_server:
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                while not self.agent_quiet_for(0.4):
                    await asyncio.sleep(0.1)
                n += 1
                asked = self.turn
                await self.say(gen.question)
                latency = await self.wait_answer(asked)
                self._count(latency, "question")
                every = gen.cfg.barge_in_every
                if latency is not None and every and n % every == 0:
                    await asyncio.sleep(1.5)  # into the answer
                    if not self.agent_quiet_for(0.0):
                        self.clear_event.clear()
                        if self.window_open:
                            self.w_barge += 1
                        onset = loop.time()
                        asked = self.turn
                        task = asyncio.create_task(self.say(gen.barge_in))
                        try:
                            await asyncio.wait_for(self.clear_event.wait(), CLEAR_TIMEOUT)
                            if self.window_open and loop.time() - onset < CLEAR_TIMEOUT:
                                self.w_cleared += 1
                        except TimeoutError:
                            pass
                        await task
                        self._count(await self.wait_answer(asked), "barge-in")
                jitter = gen.cfg.question_every * self.rng.uniform(-0.2, 0.2)
                next_at = loop.time() + gen.cfg.question_every + jitter
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - a caller that stops talking must say why
            import traceback

            traceback.print_exc(file=sys.stderr)
            self.failures.append(f"call {self.index}: the caller script failed: {type(exc).__name__}: {exc}")


def _turn_of(name: str) -> int | None:
    if not name.startswith("t"):
        return None
    head = name[1:].split("-", 1)[0]
    return int(head) if head.isdigit() else None


class Generator:
    def __init__(self, cfg: CallerConfig) -> None:
        self.cfg = cfg
        self.noise = _noise_frames(cfg.noise_dbfs, 10.0, cfg.seed)
        self.targets = [_Target(url, cfg.token, self.noise) for url in cfg.urls]
        self.calls: list[ConversationCall] = []
        self.talkers: list[asyncio.Task[None]] = []
        self.failures: list[str] = []
        self.next_index = cfg.first_index
        self.window_started = 0.0
        self.question: Utterance
        self.barge_in: Utterance

    def emit(self, event: str, **data: Any) -> None:
        print(json.dumps({"event": event, **data}), flush=True)

    async def prepare(self) -> None:
        """Synthesize both utterances once, before any call (Piper time must not disturb the pacing)."""
        from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode
        from telebridge.audio.resample import resample_once
        from telebridge.inference import InferencePool
        from telebridge.providers.tts.piper import PiperTTS

        pool = InferencePool("caller-tts", max_workers=1, max_pending=4)
        tts = PiperTTS(pool=pool, noise_scale=0.0, noise_w_scale=0.0)
        out = []
        for text in (QUESTION, BARGE_IN):
            pcm = await tts.synthesize(text)
            audio = resample_once(np.asarray(pcm, np.float32) / 32768.0, tts.sample_rate, RATE)
            data = ulaw_encode(np.concatenate([audio, np.zeros((-len(audio)) % FRAME, np.float32)]))
            loud = np.flatnonzero(_frame_rms(ulaw_decode_float(data)) > LOUD_RMS)
            frames = [data[i : i + FRAME] for i in range(0, len(data), FRAME)]
            out.append(Utterance(frames, int(loud[-1]) if loud.size else len(frames) - 1))
        pool.shutdown()
        self.question, self.barge_in = out

    async def open_calls(self, http: Any, n: int) -> list[str]:
        failures: list[str] = []

        async def one(k: int, i: int) -> None:
            await asyncio.sleep(k * self.cfg.setup_spacing)
            call = ConversationCall(self.targets[i % len(self.targets)], i, self)
            try:
                await call.open(http)
            except Exception as exc:  # noqa: BLE001 - reported: a refused call is a failure of the run
                failures.append(f"call {i}: {type(exc).__name__}: {exc}"[:300])
                return
            self.calls.append(call)
            self.talkers.append(asyncio.create_task(call.converse(), name=f"talk{i}"))

        first = self.next_index
        self.next_index += n
        await asyncio.gather(*(one(k, first + k) for k in range(n)))
        self.failures += failures
        return failures

    def window_stats(self) -> CallerStats:
        window = time.monotonic() - self.window_started
        late = np.fromiter((x for c in self.calls for x in c.lateness), float) * 1000
        hist, _ = np.histogram(np.clip(late, 0.0, LATE_BINS[-1] - 1e-6), bins=LATE_BINS)
        ratios = [c.w_audio / (c.w_audio + c.w_starved) for c in self.calls if c.w_audio > 0]
        return CallerStats(
            window_s=window, calls=len(self.calls),
            streaming=sum(1 for c in self.calls if not c.closed_by_server),
            late_hist=hist.tolist(), late_max_ms=float(late.max()) if late.size else 0.0,
            questions=sum(c.w_questions for c in self.calls), answered=sum(c.w_answered for c in self.calls),
            unanswered=sum(c.w_unanswered for c in self.calls),
            answer_latency_s=[x for c in self.calls for x in c.w_latency],
            barge_ins=sum(c.w_barge for c in self.calls), cleared=sum(c.w_cleared for c in self.calls),
            agent_audio_s=sum(c.w_audio for c in self.calls), starved_s=sum(c.w_starved for c in self.calls),
            worst_ratio=min(ratios, default=1.0),
        )

    async def hangup(self) -> HangupStats:
        for t in self.talkers:
            t.cancel()
        await asyncio.gather(*self.talkers, return_exceptions=True)
        await asyncio.gather(*(c.hangup() for c in self.calls), return_exceptions=True)
        stats = HangupStats(
            calls=len(self.calls), closed_by_server=sum(1 for c in self.calls if c.closed_by_server),
            protocol_errors=[e for c in self.calls for e in c.protocol_errors][:10],
            questions=sum(c.question_count for c in self.calls), answered=sum(c.answered_total for c in self.calls),
            unanswered=sum(c.unanswered_total for c in self.calls),
            failures=(self.failures + [f for c in self.calls for f in c.failures])[:10],
        )
        self.calls, self.talkers, self.failures = [], [], []
        return stats

    async def run(self) -> None:
        import httpx

        commands = stdin_commands(end="quit")
        await self.prepare()
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=20)) as http:
            self.emit("hello")
            while True:
                cmd, _, arg = (await commands.get()).partition(" ")
                if cmd == "open":
                    failures = await self.open_calls(http, int(arg))
                    self.emit("ready", calls=len(self.calls), failures=failures[:5])
                elif cmd == "start":
                    for c in self.calls:
                        c.begin_window()
                    self.window_started = time.monotonic()
                    self.emit("started")
                elif cmd == "end":
                    for c in self.calls:
                        c.end_window()
                    self.emit("ended", stats=self.window_stats().model_dump())
                elif cmd == "hangup":
                    self.emit("done", **(await self.hangup()).model_dump())
                elif cmd == "quit":
                    if self.calls:
                        await self.hangup()
                    return


def generator_main(cfg_json: str) -> None:
    cfg = CallerConfig.model_validate_json(cfg_json)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(Generator(cfg).run())
    else:
        uvloop.run(Generator(cfg).run())


if __name__ == "__main__":
    generator_main(sys.argv[1])
