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

Run: .venv/bin/python bench/scenarios.py [--repeats N]
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

    first = results[0]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=8, help="interruption calls (for the onset -> clear p95)")
    ap.add_argument("--only", type=int, nargs="*", help="run only these jobs (0 = interruption, 1 = backchannel, ...)")
    args = ap.parse_args()
    sys.exit(asyncio.run(run(args.repeats, args.only)))


if __name__ == "__main__":
    main()
