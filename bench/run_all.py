"""Run every benchmark in bench/ and print their outputs (``make bench``).

Why one runner: the figures only mean something side by side and from the same machine state, and a
benchmark that crashes must be visible rather than silently missing. Runs, one after another (never in
parallel: they measure CPU and latency on the same cores):

* every ``bench/bench_*.py`` (micro-benchmarks: codec, VAD, ... whatever exists);
* ``cpu_per_call.py --quick`` (server CPU per call-second with 10 calls: baseline, floor, inbound, duplex, cloud,
  and Pipecat itself, whose venv ``bench/.venv-pipecat`` is made on first use);
* ``latency.py`` (response latency of the embedded stack);
* ``provider_latency.py --quick`` (latency each cloud TTS client adds, against the local fakes).

Extra arguments are not forwarded; run a script directly for its options. Exit status is 1 if any failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def jobs() -> list[list[str]]:
    scripts = [[str(p)] for p in sorted(BENCH.glob("bench_*.py"))]
    return scripts + [
        [str(BENCH / "cpu_per_call.py"), "--quick"],
        [str(BENCH / "latency.py")],
        [str(BENCH / "provider_latency.py"), "--quick"],
        [str(BENCH / "scenarios.py"), "--repeats", "5"],
        [str(BENCH / "scenarios.py"), "--echo", "quick"],
    ]


def main() -> int:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    results: list[tuple[str, int, float]] = []
    for job in jobs():
        name = " ".join([Path(job[0]).name, *job[1:]])
        print(f"\n{'=' * 100}\n== {name}\n{'=' * 100}", flush=True)
        t0 = time.monotonic()
        code = subprocess.call([sys.executable, *job], cwd=ROOT, env=env)
        results.append((name, code, time.monotonic() - t0))
    print(f"\n{'=' * 100}\n== summary")
    for name, code, seconds in results:
        print(f"  {'ok    ' if code == 0 else f'FAILED ({code})'}  {seconds:6.0f} s  {name}")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
