"""Turn-taking on a simulated phone line: the scenario suite, with pass/fail and measured latencies.

Why: the promise is that the agent stops the instant a caller really interrupts, and never for echo, line
noise, coughs or "uh-huh". ``tests/test_scenarios.py`` checks the behaviour; this script measures it, calls one
after another on an otherwise idle server so the figures are not disturbed by the suite's parallel calls.

How: a real server (``tests/conftest.py``'s ``LiveServer``) with ``tests/agents/scenario_agent.py`` and a local
fake of Twilio's REST API, the simulator playing Twilio and the caller with real Piper speech at 8 kHz μ-law.
Scenarios (``tests/scenariolib.py``): 1 real interruption (repeated for the p95), 2 backchannels, 3 echo at
−20 dB with 100/200/300 ms delay, 4 line noise at −45 dBFS, 5 cough and laugh bursts, 6 interruption
mid-sentence, 7 DTMF / silence / max duration / end_call / transfer_call.

Targets (issue 3):
* onset → ``clear`` within ``interrupt_time_threshold`` (0.5 s) + 100 ms at p95, caller side;
* end of caller speech → first agent audio within ``min_endpointing_delay`` (0.5 s) + 50 ms of bridge
  overhead, with STT / LLM / TTS shown separately (server side: ``overhead`` = total − endpointing delay −
  STT time not hidden by it − LLM first token − TTS first audio);
* zero false interruptions in scenarios 2–4.

Echo that comes and goes (issue 10), ``--echo``: the matrix onset × ERL × delay × line noise (onsets: with the
greeting, on reply 2, on reply 5, handset → speakerphone → handset, gone during reply 2), each cell one call,
plus double talk (a caller interrupting over the echo, after an "uh-huh" that must not) at each ERL × delay.
The table: false pauses and interruptions (not caused by the caller's own sound), replies abandoned, barge-in
latency (onset → ``clear``, target ``interrupt_time_threshold`` + 150 ms), response latency, and the echo
canceller's CPU per call-second (time inside ``EchoCanceller.process`` and ``process_silent`` over the call's
audio). ``--echo quick`` runs a representative subset (~3 min), ``--echo full`` all 135 cells + 9 double-talk
calls (~50 min).

Run: .venv/bin/python bench/scenarios.py [--repeats N] [--echo quick|full]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

THRESHOLD = 0.5
MIN_ENDPOINTING = 0.5
CLEAR_TARGET = THRESHOLD + 0.1
OVERHEAD_TARGET = 0.05


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def run(repeats: int, only: list[int] | None = None) -> int:
    import scenariolib as lib
    from conftest import AUTH_TOKEN, LiveServer
    from fakes.twilio_api import FakeTwilioApi, FakeTwilioServer

    api = FakeTwilioApi(AUTH_TOKEN)
    fake = FakeTwilioServer(api).start()
    t0 = time.monotonic()
    server = LiveServer(agent=str(lib.AGENT_FILE), twilio_api_base_url=fake.url).start()
    print(f"scenarios: server on {server.url} (models loaded in {time.monotonic() - t0:.1f} s); calls one at a time",
          flush=True)
    ctx = lib.Context(server, AUTH_TOKEN, api)
    jobs = [
        lambda: lib.interruption(ctx, repeats=repeats),
        lambda: lib.agents_words(ctx),
        lambda: lib.backchannel(ctx),
        lambda: lib.echo(ctx, 0.1),
        lambda: lib.echo(ctx, 0.2),
        lambda: lib.echo(ctx, 0.3),
        lambda: lib.line_noise(ctx),
        lambda: lib.cough(ctx),
        lambda: lib.mid_sentence(ctx),
        lambda: lib.dtmf(ctx),
        lambda: lib.silence(ctx),
        lambda: lib.max_duration(ctx),
        lambda: lib.end_call_tool(ctx),
        lambda: lib.transfer_tool(ctx),
    ]
    results = []
    if only:
        jobs = [jobs[i] for i in only]
    try:
        for job in jobs:
            started = time.monotonic()
            result = await job()
            results.append(result)
            print(f"  {result.name:18} {'PASS' if result.passed else 'FAIL'}  ({time.monotonic() - started:4.1f} s)",
                  flush=True)
    finally:
        server.stop()
        fake.stop()

    print()
    print(f"{'scenario':18} {'result':6} {'pauses':>6} {'false int.':>10}  figures")
    print("-" * 100)
    for r in results:
        figures = ", ".join(f"{k} {np.median(v):.3f}" + (f" (n={len(v)})" if len(v) > 1 else "")
                            for k, v in r.figures.items() if not k.startswith("response_"))
        print(f"{r.name:18} {'pass' if r.passed else 'FAIL':6} {r.pauses:6d} {r.false_interruptions:10d}  {figures}")
        for failure in r.failures():
            print(f"{'':26}! {failure}")

    first = next((r for r in results if r.name == "1-interruption"), results[0])  # (the latency figures are its)
    clears = first.figures.get("onset_to_clear", [])
    print()
    print(f"{'latency (s)':34} {'median':>8} {'p95':>8} {'n':>4}  target")
    print("-" * 74)
    print(f"{'onset -> clear (caller side)':34} {pct(clears, 50):8.3f} {pct(clears, 95):8.3f} {len(clears):4d}  "
          f"<= {CLEAR_TARGET:.2f} at p95: {'OK' if clears and pct(clears, 95) <= CLEAR_TARGET else 'OVER'}")
    rows = [("response_caller_side", "speech end -> answer (caller side)"), ("response_total", "  server: total"),
            ("response_endpointing", "  server: endpointing (+STT wait)"), ("response_stt", "  server: STT"),
            ("response_llm_first_token", "  server: LLM first token"),
            ("response_tts_first_audio", "  server: TTS first audio"),
            ("response_overhead", "  server: bridge overhead")]
    for key, label in rows:
        values = first.figures.get(key, [])
        target = ""
        if key == "response_overhead":
            target = f"<= {OVERHEAD_TARGET:.2f} at p95: {'OK' if values and pct(values, 95) <= OVERHEAD_TARGET else 'OVER'}"
        print(f"{label:34} {pct(values, 50):8.3f} {pct(values, 95):8.3f} {len(values):4d}  {target}")
    false = sum(r.false_interruptions for r in results if r.name.startswith(("2-", "3-", "4-")))
    print()
    print(f"false interruptions in scenarios 2-4: {false} (target 0)")
    print(f"endpointing delay of the scenario agent: {MIN_ENDPOINTING:.2f} s; interrupt_time_threshold {THRESHOLD:.2f} s")
    failed = [r.name for r in results if not r.passed]
    print(f"{len(results) - len(failed)}/{len(results)} scenarios passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed or false else 0


ONSETS = ("greeting", "reply2", "reply5", "change", "gone")
ERLS = (12.0, 20.0, 30.0)
DELAYS = (0.04, 0.25, 0.4)
NOISES = (None, -60.0, -45.0)
DOUBLE_TALK_TARGET = THRESHOLD + 0.15


def echo_matrix(full: bool) -> tuple[list, list]:
    """(echo cases, double-talk cases)."""
    import scenario_echo as lib

    if full:
        cases = [lib.EchoCase(o, e, d, n) for o in ONSETS for e in ERLS for d in DELAYS for n in NOISES]
        talk = [lib.EchoCase("greeting", e, d, -60.0) for e in ERLS for d in DELAYS]
    else:
        cases = [*lib.ECHO_SUITE, lib.EchoCase("greeting", 12.0, 0.25, -60.0), lib.EchoCase("reply5", 12.0, 0.25, -60.0),
                 lib.EchoCase("reply2", 12.0, 0.04, -45.0), lib.EchoCase("reply2", 20.0, 0.4, None)]
        talk = [lib.EchoCase("greeting", 12.0, 0.25, -60.0), lib.EchoCase("greeting", 20.0, 0.1, -60.0),
                lib.EchoCase("greeting", 30.0, 0.4, -60.0)]
    return cases, talk


async def run_echo(full: bool) -> int:
    import scenario_echo as echo
    import scenariolib as lib
    from conftest import AUTH_TOKEN, LiveServer
    from fakes.twilio_api import FakeTwilioApi, FakeTwilioServer
    from telebridge.pipeline.aec import EchoCanceller

    busy = {"seconds": 0.0, "samples": 0, "depth": 0}
    originals = EchoCanceller.process, EchoCanceller.process_silent

    def timing(method):  # noqa: ANN001, ANN202  (the server runs in this process: time the canceller's entry points)
        def timed(self, near, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
            busy["depth"] += 1
            t0 = time.perf_counter()
            try:
                return method(self, near, *args, **kw)
            finally:
                busy["depth"] -= 1
                if not busy["depth"]:  # (process_silent may call process: count the outer call only)
                    busy["seconds"] += time.perf_counter() - t0
                    busy["samples"] += len(near)
        return timed

    EchoCanceller.process = timing(EchoCanceller.process)  # type: ignore[method-assign]
    EchoCanceller.process_silent = timing(EchoCanceller.process_silent)  # type: ignore[method-assign]
    api = FakeTwilioApi(AUTH_TOKEN)
    fake = FakeTwilioServer(api).start()
    server = LiveServer(agent=str(lib.AGENT_FILE), twilio_api_base_url=fake.url).start()
    ctx = lib.Context(server, AUTH_TOKEN, api)
    cases, talk = echo_matrix(full)
    rows = []
    print(f"echo matrix: {len(cases)} calls + {len(talk)} double-talk calls, one at a time", flush=True)
    try:
        for double_talk, case in [*((False, c) for c in cases), *((True, c) for c in talk)]:
            before = dict(busy)
            started = time.monotonic()
            result = await (echo.echo_double_talk(ctx, case) if double_talk else echo.echo_case(ctx, case))
            seconds = busy["samples"] - before["samples"]
            cpu = 1000 * (busy["seconds"] - before["seconds"]) / (seconds / 8000) if seconds else float("nan")
            rows.append((result, cpu))
            print(f"  {result.name:44} {'PASS' if result.passed else 'FAIL'}  ({time.monotonic() - started:4.1f} s)",
                  flush=True)
    finally:
        server.stop()
        fake.stop()
        EchoCanceller.process, EchoCanceller.process_silent = originals  # type: ignore[method-assign]

    print()
    print(f"{'case':44} {'result':6} {'false p.':>8} {'false i.':>8} {'abandoned':>9} {'barge-in':>8} "
          f"{'response':>8} {'aec ms/s':>8}")
    print("-" * 108)
    for r, cpu in rows:
        abandoned = sum(1 for label, ok, _ in r.checks if "played out" in label and not ok)
        barge = r.figures.get("onset_to_clear", [])
        resp = r.figures.get("response_total", [])
        print(f"{r.name:44} {'pass' if r.passed else 'FAIL':6} {r.pauses:8d} {r.false_interruptions:8d} "
              f"{abandoned:9d} {(f'{barge[0]:.3f}' if barge else ''):>8} "
              f"{(f'{np.median(resp):.3f}' if resp else ''):>8} {cpu:8.2f}")
        for failure in r.failures():
            print(f"{'':8}! {failure[:160]}")
    echo_rows = [r for r, _ in rows if not r.name.startswith("double-talk")]
    talk_rows = [r for r, _ in rows if r.name.startswith("double-talk")]
    barges = [r.figures["onset_to_clear"][0] for r in talk_rows if r.figures.get("onset_to_clear")]
    cpus = [c for _, c in rows if c == c]
    print()
    # A call that never played its replies (it failed, or the server dropped it) had no chance to pause falsely:
    # its zeros would flatter the totals, so they count only the calls whose replies played out.
    played = [r for r in echo_rows if not any("played out" in label and not ok for label, ok, _ in r.checks)]
    print(f"false pauses: {sum(r.pauses for r in played)}, false interruptions: "
          f"{sum(r.false_interruptions for r in played)} in {len(played)} echo calls whose replies played out, of "
          f"{len(echo_rows)} (target 0 in all)")
    print(f"barge-in over echo (onset -> clear): median {pct(barges, 50):.3f} s, max "
          f"{max(barges) if barges else float('nan'):.3f} s, n={len(barges)} (target <= {DOUBLE_TALK_TARGET:.2f} s)")
    print(f"echo canceller CPU: median {pct(cpus, 50):.2f} ms per call-second (bench/bench_echo.py splits it)")
    failed = [r.name for r, _ in rows if not r.passed]
    print(f"{len(rows) - len(failed)}/{len(rows)} passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=8, help="interruption calls (for the onset -> clear p95)")
    ap.add_argument("--only", type=int, nargs="*", help="run only these jobs (0 = interruption, 1 = the agent's words, "
                    "2 = backchannel, ...)")
    ap.add_argument("--echo", choices=("quick", "full"), help="run the echo matrix instead (issue 10)")
    args = ap.parse_args()
    if args.echo:
        sys.exit(asyncio.run(run_echo(args.echo == "full")))
    sys.exit(asyncio.run(run(args.repeats, args.only)))


if __name__ == "__main__":
    main()
