"""Response latency of the embedded stack: end of the caller's speech -> first agent audio.

Why: on the phone a reply that starts more than about a second after the caller stops feels broken. The budget
is the endpointing delay the agent asked for (``max(vad.min_silence_duration, min_endpointing_delay)`` = 0.55 s
for the demo agent) plus 400 ms for everything else (STT, LLM first token, TTS first audio, sending).

How: a real server (``tests/conftest.py``'s ``LiveServer``: uvicorn on loopback, in a thread of this process)
with the built-in demo agent, and the Twilio simulator placing one call per question, sequentially: the caller
waits for the greeting to finish, asks, and hangs up once the agent has been quiet for 1.5 s. Two views:

* server side -- ``runtime.finished[i].metrics.turns``: per turn ``total`` (end of caller speech, as the VAD
  placed it, -> first agent audio sent), split into ``endpointing`` (waiting for silence and the transcript,
  minus STT), ``stt``, ``llm_first_token`` and ``tts_first_audio``;
* caller side -- from the simulator's timelines: the last loud 20 ms frame the caller sent -> the first loud
  frame the caller heard after it (includes the network, Twilio's playback buffer and the TTS lead-in silence).

Run: .venv/bin/python bench/latency.py [--questions N]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = (
    "What are your opening hours?",
    "Where are you located?",
    "How much does a checkup cost?",
    "I would like to book an appointment.",
    "Do you take dental insurance?",
    "Can I talk to a real person please?",
    "I have a terrible toothache.",
    "Are you open on Saturday?",
)
RATE = 8000
FRAME = 160
CALLER_LOUD = 10 ** (-40 / 20)  # caller speech: μ-law silence decodes to ~0, Piper speech sits far above
AGENT_LOUD = 10 ** (-45 / 20)  # the simulator's own threshold for agent speech
ENDPOINTING_S = 0.55  # max(vad.min_silence_duration 0.55, min_endpointing_delay 0.5) for the demo agent
BUDGET_S = 0.40
COMPONENTS = ("total", "endpointing", "stt", "llm_first_token", "tts_first_audio")
"""Printed first, in this order; any other per-turn figure the server records is printed after them."""


def frame_rms(audio: np.ndarray) -> np.ndarray:
    n = len(audio) // FRAME
    frames = audio[: n * FRAME].reshape(n, FRAME).astype(np.float64)
    return np.sqrt(np.mean(frames * frames, axis=1))


def caller_side_latency(sent: np.ndarray, heard: np.ndarray) -> float | None:
    """Seconds from the end of the caller's speech to the onset of the agent's answer, both on the stream clock."""
    loud_sent = np.flatnonzero(frame_rms(sent) > CALLER_LOUD)
    if loud_sent.size == 0:
        return None
    speech_end = int(loud_sent[-1]) + 1  # frame index just after the caller's last loud frame
    heard_rms = frame_rms(heard)
    after = np.flatnonzero(heard_rms[speech_end:] > AGENT_LOUD)
    if after.size == 0:
        return None
    return float(after[0]) * FRAME / RATE


async def one_call(url: str, token: str, question: str) -> Any:
    from telebridge.simulator import Say, simulate_call

    return await simulate_call(
        url,
        script=[Say(at=None, text=question, after_agent_quiet=0.8)],
        auth_token=token,
        end_when_quiet=1.5,
        transcribe=False,
        duration=40.0,
    )


def wait_finished(server: Any, call_sid: str, timeout: float = 15.0) -> Any | None:
    """The server's CallSession for ``call_sid`` once it has been torn down (it lands in runtime.finished)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for session in list(server.runtime.finished):
            if session.call_id == call_sid:
                return session
        time.sleep(0.05)
    return None


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=len(QUESTIONS), help="how many calls (one question each)")
    args = ap.parse_args()

    from conftest import AUTH_TOKEN, LiveServer

    t0 = time.monotonic()
    server = LiveServer().start()
    print(f"latency: demo agent on {server.url} (models loaded in {time.monotonic() - t0:.1f} s); "
          f"{args.questions} calls, one question each", flush=True)
    server_turns: list[dict[str, float]] = []
    caller: list[float] = []
    problems: list[str] = []
    try:
        for i in range(args.questions):
            question = QUESTIONS[i % len(QUESTIONS)]
            call = asyncio.run(one_call(server.url, AUTH_TOKEN, question))
            if call.protocol_errors:
                problems.append(f"{question!r}: protocol errors {call.protocol_errors[:2]}")
            c = caller_side_latency(call.sent, call.heard)
            session = wait_finished(server, call.call_sid)
            turns = list(session.metrics.turns) if session is not None else []
            if session is None:
                problems.append(f"{question!r}: the server never finished the call")
            elif not turns:
                problems.append(f"{question!r}: no turn was measured server-side (was the question heard?)")
            if c is None:
                problems.append(f"{question!r}: the caller heard no answer")
            else:
                caller.append(c)
            server_turns += turns
            first = turns[0] if turns else {}
            print(f"  {question:38} server total {1000 * first.get('total', math.nan):6.0f} ms   "
                  f"caller-side {1000 * (c if c is not None else math.nan):6.0f} ms   turns {len(turns)}", flush=True)
    finally:
        server.stop()

    target = ENDPOINTING_S + BUDGET_S
    print()
    print(f"{'component (s)':24} {'median':>8} {'p95':>8} {'n':>4}")
    print("-" * 48)
    keys = list(COMPONENTS) + sorted({k for t in server_turns for k in t} - set(COMPONENTS))
    for key in keys:
        values = [t[key] for t in server_turns if key in t]
        print(f"{'server ' + key:24} {pct(values, 50):8.3f} {pct(values, 95):8.3f} {len(values):4d}")
    print(f"{'caller-side total':24} {pct(caller, 50):8.3f} {pct(caller, 95):8.3f} {len(caller):4d}")
    print()
    totals = [t["total"] for t in server_turns if "total" in t]
    verdict = "OK" if totals and pct(totals, 50) <= target else "OVER"
    print(f"target: endpointing delay {ENDPOINTING_S:.2f} s + {1000 * BUDGET_S:.0f} ms = {target:.2f} s "
          f"(server total, median): {verdict}")
    print(f"beyond endpointing (server total - {ENDPOINTING_S:.2f} s), median: "
          f"{1000 * (pct(totals, 50) - ENDPOINTING_S):.0f} ms of the {1000 * BUDGET_S:.0f} ms budget")
    caller_verdict = "OK" if caller and pct(caller, 50) <= target else "OVER"
    print(f"as the caller hears it (caller-side total, median {pct(caller, 50):.2f} s vs {target:.2f} s): "
          f"{caller_verdict}; the gap to the server's figure is the VAD's placement of speech end (the last "
          f"window above threshold, before the speech energy has died away), its 32 ms batching, transport, "
          f"the playback buffer and the TTS lead-in")
    if problems:
        print("problems:")
        for p in problems:
            print("  " + p)


if __name__ == "__main__":
    main()
