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

The end-of-turn model (Smart Turn v3) is measured on and off in the same run (``--end-of-turn both``, the
default): the same questions, plus callers who pause mid-thought ("my number is four one five … [1.2 s] … five
five five …", "I'd like to … um … book …", cut from one continuous synthesized sentence so the prosody at the
pause is mid-sentence) -- an agent that answers inside such a pause has cut the caller off.

The embedded Whisper's window is chosen with ``--whisper``: ``default`` (the agent's ``STT.Whisper()``), ``short``
(``short_window=True``), ``full`` (``short_window=False``) or ``both`` (full and short, interleaved call by call).
Each mid-thought phrase's cut-offs are counted per mode; a cut-off prints what the server heard and what the
end-of-turn model answered at each pause (the pipeline's debug log for that call).

Every answer is synthesized afresh (the TTS phrase cache is emptied before each question, as an LLM's answers
are new words); ``--tts-cache`` keeps it, so the demo agent's repeated canned answers start with no TTS time.

Run: .venv/bin/python bench/latency.py [--questions N] [--end-of-turn both|on|off] [--pauses N]
     [--whisper default|short|full|both] [--tts-cache] [--trace]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
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


MID_THOUGHT = (
    # (one sentence, the pauses to stretch, seconds of silence put there, the shortest gap that counts: 0.08 s
    # counts the stops inside phrases ("I'd like | to"), 0.2 s only Piper's pauses at commas, so gap k = comma k)
    ("My number is four one five, five five five, one two three four.", (0,), 1.2, 0.08),
    ("I'd like to, um, book a table for two tomorrow night.", (0, 1), 1.0, 0.08),
    ("So I was wondering if, maybe, you could move my appointment to Friday.", (0,), 1.2, 0.08),
    ("My last name is spelled K, O, W, A, L, S, K, I.", (2,), 1.0, 0.2),
    ("Could I come in on the, um, fourteenth?", (0, 1), 1.0, 0.2),
    ("I need a cleaning and also, um, I have a question about my bill.", (0, 1), 1.0, 0.2),
    ("My account number is seven two nine, four four eight, six one.", (0, 1), 1.2, 0.2),
    ("I think, um, Tuesday would be better for me.", (0, 1), 1.0, 0.2),
    ("My email is john dot smith, at gmail dot com.", (0,), 1.2, 0.2),
    ("My date of birth is March, fifth, nineteen eighty two.", (0,), 1.2, 0.2),
    ("The best number to reach me is, uh, two one two, five five five, nine eight seven six.", (2,), 1.2, 0.2),
    ("Can you check if, you know, my insurance covers whitening?", (0,), 1.0, 0.2),
)
WINDOWS = {"default": None, "short": True, "full": False}  # --whisper: demo_whisper.SHORT_WINDOW
KEEP_PHRASES = False  # --tts-cache: let repeated answers come from the TTS phrase cache
TRACE = False  # --trace: print each question's pipeline log (when the model was asked, when the reply started)


async def mid_thought_call(url: str, token: str, audio: np.ndarray, text: str) -> Any:
    from telebridge.simulator import Play, simulate_call

    return await simulate_call(url, script=[Play(at=None, audio=audio, text=text, after_agent_quiet=0.8)],
                               auth_token=token, end_when_quiet=2.0, transcribe=False, duration=40.0)


def cut_off(call: Any, session: Any) -> bool:
    """Did the agent answer before the caller finished? (The first reply's words lack the sentence's end, or the
    caller heard the agent while still talking.)"""
    turns = [m for m in (session.history if session is not None else []) if m.get("role") == "user"]
    if len(turns) > 1:
        return True
    sent_loud = np.flatnonzero(frame_rms(call.sent) > CALLER_LOUD)
    if sent_loud.size == 0:
        return False
    heard = frame_rms(call.heard)
    return bool(np.any(heard[int(sent_loud[0]) : int(sent_loud[-1])] > AGENT_LOUD))


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


def set_mode(server: Any, mode: str, model: Any) -> None:
    """'off' or 'on' (the end-of-turn model), then optionally ' <window>' (Whisper's): calls set up from now on
    use the fixed endpointing delays or ask the model, and hear the caller through that Whisper window."""
    from bench.agents import demo_whisper

    eot, _, window = mode.partition(" ")
    server.runtime.turn_classifier = None if eot == "off" else model
    demo_whisper.SHORT_WINDOW = WINDOWS[window or "default"]


class CallLog(logging.Handler):
    """The pipeline's debug log, kept per call id: what a cut-off caller was heard as, and the model's answers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        del self.lines[:-2000]

    def about(self, call_sid: str) -> list[str]:
        keep = ("heard", "end_of_turn", "reply")
        return [line for line in self.lines if call_sid in line and any(k in line for k in keep)]


def forget_phrases(server: Any) -> None:
    """Empty the process's TTS phrase caches: the next answer is synthesized afresh, as an LLM's new words are
    (the demo agent's canned answers repeat, and a cached answer starts with no TTS time at all)."""
    server.runtime.clear_phrase_caches()


def run_question(server: Any, token: str, mode: str, question: str, out: dict[str, Any], log: CallLog) -> None:
    if not KEEP_PHRASES:
        forget_phrases(server)
    call = asyncio.run(one_call(server.url, token, question))
    out["call_s"] += len(call.sent) / RATE
    if call.protocol_errors:
        out["problems"].append(f"{question!r}: protocol errors {call.protocol_errors[:2]}")
    c = caller_side_latency(call.sent, call.heard)
    session = wait_finished(server, call.call_sid)
    out["early_stt"] += session.metrics.early_stt if session is not None else 0
    out["calls"] += 1
    turns = list(session.metrics.turns) if session is not None else []
    if session is None:
        out["problems"].append(f"{question!r}: the server never finished the call")
    elif not turns:
        out["problems"].append(f"{question!r}: no turn was measured server-side (was the question heard?)")
    if c is None:
        out["problems"].append(f"{question!r}: the caller heard no answer")
    else:
        out["caller"].append(c)
    out["turns"] += turns
    first = turns[0] if turns else {}
    print(f"  [{mode:3}] {question:38} server total {1000 * first.get('total', math.nan):6.0f} ms   "
          f"caller-side {1000 * (c if c is not None else math.nan):6.0f} ms", flush=True)
    if TRACE:
        for line in log.about(call.call_sid):
            print(f"          | {line}", flush=True)


def run_pause(server: Any, token: str, mode: str, i: int, out: dict[str, Any], log: CallLog) -> None:
    sentence, stretch, pause, min_gap = MID_THOUGHT[i % len(MID_THOUGHT)]
    from speechutil import with_pauses

    audio = with_pauses(sentence, stretch, pause, RATE, min_gap=min_gap)
    call = asyncio.run(mid_thought_call(server.url, token, audio, sentence))
    out["call_s"] += len(call.sent) / RATE
    session = wait_finished(server, call.call_sid)
    out["early_stt"] += session.metrics.early_stt if session is not None else 0
    out["calls"] += 1
    bad = cut_off(call, session)
    out["mid"] += 1
    out["cut_off"] += bad
    out["phrases"].setdefault(sentence, []).append(bad)
    print(f"  [{mode}] pause {pause:.1f} s in {sentence[:40]!r:44} {'CUT OFF' if bad else 'waited'}", flush=True)
    if bad and session is not None:  # what the agent took for the caller's turns, and why
        said = [m.get("content") for m in session.history if m.get("role") == "user"]
        print(f"          the agent heard: {said}", flush=True)
        for line in log.about(call.call_sid):
            print(f"          | {line}", flush=True)


def run_all(server: Any, token: str, modes: tuple[str, ...], questions: int, pauses: int) -> dict[str, Any]:
    """Modes interleaved call by call (alternating which goes first), so load and caches favour neither."""
    model = server.runtime.turn_classifier
    if any(m.startswith("on") for m in modes) and model is None:
        raise SystemExit("the end-of-turn model is not installed (pip install -e '.[turn]')")
    results = {m: {"turns": [], "caller": [], "problems": [], "cut_off": 0, "mid": 0, "call_s": 0.0,
                   "early_stt": 0, "calls": 0, "phrases": {}} for m in modes}
    log = CallLog()
    pipeline = logging.getLogger("telebridge.call")
    pipeline.addHandler(log)
    pipeline.setLevel(logging.DEBUG)
    cpu0, asked0 = (model.cpu_seconds, model.questions) if model is not None else (0.0, 0)
    try:
        for i in range(questions):
            for mode in (modes if i % 2 == 0 else modes[::-1]):
                set_mode(server, mode, model)
                run_question(server, token, mode, QUESTIONS[i % len(QUESTIONS)], results[mode], log)
        for i in range(pauses):
            for mode in (modes if i % 2 == 0 else modes[::-1]):
                set_mode(server, mode, model)
                run_pause(server, token, mode, i, results[mode], log)
    finally:
        server.runtime.turn_classifier = model
        pipeline.removeHandler(log)
    on = [m for m in modes if m.startswith("on")]
    if model is not None and len(on) == 1:  # the model's CPU is one figure for the run: one mode to charge it to
        results[on[0]]["model_cpu"] = model.cpu_seconds - cpu0
        results[on[0]]["questions"] = model.questions - asked0
    return results


def report(mode: str, r: dict[str, Any]) -> None:
    server_turns, caller = r["turns"], r["caller"]
    target = ENDPOINTING_S + BUDGET_S
    print()
    print(f"end-of-turn model {mode.upper()}")
    print(f"{'component (s)':24} {'median':>8} {'p95':>8} {'n':>4}")
    print("-" * 48)
    keys = list(COMPONENTS) + sorted({k for t in server_turns for k in t} - set(COMPONENTS))
    for key in keys:
        values = [t[key] for t in server_turns if key in t]
        print(f"{'server ' + key:24} {pct(values, 50):8.3f} {pct(values, 95):8.3f} {len(values):4d}")
    print(f"{'caller-side total':24} {pct(caller, 50):8.3f} {pct(caller, 95):8.3f} {len(caller):4d}")
    totals = [t["total"] for t in server_turns if "total" in t]
    print(f"fixed-delay target: endpointing {ENDPOINTING_S:.2f} s + {1000 * BUDGET_S:.0f} ms = {target:.2f} s "
          f"(server total, median): {'OK' if totals and pct(totals, 50) <= target else 'OVER'}")
    print(f"issue 10 target: end of a complete question -> first agent audio heard, median <= 0.60 s: "
          f"{pct(caller, 50):.2f} s ({'met' if caller and pct(caller, 50) <= 0.6 else 'NOT met'})")
    if r["mid"]:
        print(f"callers pausing mid-thought cut off: {r['cut_off']} of {r['mid']} (target 0)")
        for sentence, cuts in r["phrases"].items():
            print(f"  {sum(cuts)}/{len(cuts)} cut off  {sentence}")
    if r.get("questions"):
        per_q = 1000 * r["model_cpu"] / r["questions"]
        print(f"end-of-turn model CPU: {per_q:.0f} ms per question, {r['questions']} questions in "
              f"{r['call_s']:.0f} s of calls = {1000 * r['model_cpu'] / r['call_s']:.1f} ms per call-second "
              f"(these calls are mostly the caller talking or pausing: a conversation's own rate is lower)")
    print(f"early transcripts (started inside a pause, used or not): {r['early_stt']} in {r['calls']} calls")
    for p in r["problems"]:
        print("  problem: " + p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=len(QUESTIONS), help="how many calls (one question each)")
    ap.add_argument("--pauses", type=int, default=len(MID_THOUGHT), help="mid-thought callers per mode")
    ap.add_argument("--end-of-turn", choices=("both", "on", "off"), default="both")
    ap.add_argument("--trace", action="store_true",
                    help="print each question's pipeline log: the model's questions and answers, the reply's start")
    ap.add_argument("--tts-cache", action="store_true",
                    help="keep the TTS phrase cache between calls (by default every answer is synthesized afresh)")
    ap.add_argument("--whisper", choices=("default", "short", "full", "both"), default="default",
                    help="the embedded Whisper's window (both: full and short, interleaved)")
    args = ap.parse_args()
    global KEEP_PHRASES, TRACE
    KEEP_PHRASES = args.tts_cache
    TRACE = args.trace

    from conftest import AUTH_TOKEN, LiveServer

    t0 = time.monotonic()
    server = LiveServer(agent="bench.agents.demo_whisper").start()
    eot = ("off", "on") if args.end_of_turn == "both" else (args.end_of_turn,)
    windows = ("full", "short") if args.whisper == "both" else (args.whisper,)
    modes = tuple(m if w == "default" else f"{m} {w}" for w in windows for m in eot)
    print(f"latency: demo agent on {server.url} (models loaded in {time.monotonic() - t0:.1f} s); "
          f"{args.questions} questions + {args.pauses} mid-thought callers per mode {modes}; TTS phrase cache "
          f"{'kept' if args.tts_cache else 'emptied before each question'}", flush=True)
    try:
        results = run_all(server, AUTH_TOKEN, modes, args.questions, args.pauses)
    finally:
        server.stop()
    for mode, r in results.items():
        report(mode, r)
    base = modes[0]
    for mode in modes[1:]:
        a, b = pct(results[mode]["caller"], 50), pct(results[base]["caller"], 50)
        print(f"\n[{mode}] vs [{base}], caller-side median: {a:.2f} s vs {b:.2f} s ({a / b:.2f}x)")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1, 5, 15 min)")
    print("(caller-side = last loud caller frame -> first loud agent frame on the simulator's stream clock: the "
          "network, the playback buffer and the TTS lead-in included)")


if __name__ == "__main__":
    main()
