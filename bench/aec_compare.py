"""Does a change to the echo canceller change what it decides? Two checkouts, the same audio, every block compared.

Runs :class:`telebridge.pipeline.aec.EchoCanceller` of two checkouts (``--old``, and this one or ``--new``) on the
same signals: the three of ``bench/bench_echo.py`` (agent talking with a 12 dB echo, without, agent silent) and
the scenarios of ``tests/test_echo_canceller.py`` (an echo appearing at five levels and delays, one changing and
going, a misplaced reference with and without the flag, the caller talking over echo and over the agent, pauses
in the agent's speech), in 20 ms frames and, for three of them, 333-sample ones. Each checkout runs in its own
process. Compared per block: the verdict, the echo bound and the output; at the end, the path, the gains, the
filter's share, seeds and counters. Prints each run that differs (verdicts: how many blocks; numbers: the largest
relative difference, "ulp" when below 1e-6) and exits non-zero if any verdict or number differs by more.

Run: .venv/bin/python bench/aec_compare.py --old ../main    (e.g. a `git worktree add /tmp/old <commit>`)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 160


def make_signals(dest: Path) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import bench_echo as be
    import test_echo_canceller as t
    from telebridge.simulator.script import LineEcho

    cases: dict[str, tuple] = {}
    echo_in, ref = be.signals(20, echo=True)
    clean_in, _ = be.signals(20, echo=False)
    cases["bench_echo"] = (echo_in, ref, None)
    cases["bench_clean"] = (clean_in, ref, None)
    cases["bench_silent"] = (clean_in, np.zeros_like(ref), None)
    for erl, delay, noise, tail, drift in [(12, 0.25, -60, 0.0, 0.0), (12, 0.04, -60, 0.0, 0.0),
                                           (12, 0.40, -45, 0.04, 100.0), (20, 0.10, None, 0.0, 0.0),
                                           (30, 0.25, -60, 0.0, 0.0)]:
        i, r, _ = t.line([(3.0, LineEcho(-erl, delay, tail=tail, drift_ppm=drift))], noise_dbfs=noise)
        cases[f"appear_{erl}dB_{delay}s"] = (i, r, None)
    i, r, flags = t.starving_line([(3.0, 0.2, 0.06), (5.0, 0.3, -0.05), (7.5, 0.15, 0.1), (9.3, 0.25, 0.03)])
    cases["starving_told"] = (i, r, flags)
    cases["starving_untold"] = (i, r, None)
    i, r, _ = t.line([(6.0, LineEcho(-12, 0.3))])
    cases["late_echo"] = (i, r, None)
    i, r, _ = t.line([(0.0, LineEcho(-30, 0.06)), (3.5, LineEcho(-12, 0.25, tail=0.04)), (8.0, None)])
    cases["changes"] = (i, r, None)
    for k, echo in enumerate([None, LineEcho(-12, 0.25), LineEcho(-20, 0.1, tail=0.04)]):
        i, r, _ = t.line([(0.3, echo)] if echo else [], caller_at=4.0)
        cases[f"double_talk_{k}"] = (i, r, None)
    for at in (2.5, 3.1, 3.7):
        i, r, _ = t.line([], caller_at=at)
        cases[f"caller_no_echo_{at}"] = (i, r, None)
    i, r, _ = t.line([(0.5, LineEcho(-15, 0.2))], caller_at=6.0)  # the agent pausing for 2 s
    gap = np.zeros(2 * 8000, np.float32)
    noise = (np.random.default_rng(5).standard_normal(len(gap)) * 1e-3).astype(np.float32)
    cases["pauses"] = (np.concatenate([i[:40000], noise, i[40000:]]), np.concatenate([r[:40000], gap, r[40000:]]), None)
    arrays = {}
    for name, (i, r, f) in cases.items():
        arrays[name + ".in"], arrays[name + ".ref"] = i, r
        if f is not None:
            arrays[name + ".flags"] = f
    np.savez(dest, **arrays)


TRACE = r'''
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from telebridge.pipeline.aec import EchoCanceller
sig = np.load(sys.argv[2])
res = {}
for name in sorted({k.rsplit(".", 1)[0] for k in sig.files}):
    inbound, ref = sig[name + ".in"], sig[name + ".ref"]
    flags = sig[name + ".flags"] if name + ".flags" in sig.files else None
    for frame in (160, 333) if name in ("bench_echo", "changes", "starving_told") else (160,):
        aec = EchoCanceller(keep=120.0)
        outs = [aec.process(inbound[i:i + frame], ref[i:i + frame],
                            unsure=bool(flags[i // 160]) if flags is not None else False)
                for i in range(0, len(inbound), frame)]
        key = f"{name}@{frame}"
        res[key + ".out"] = np.concatenate(outs)
        res[key + ".verdict"] = np.array([aec.verdict(b * 160, (b + 1) * 160) for b in range(aec.blocks)], np.int8)
        res[key + ".bound"] = np.array([aec.bound(b * 160, (b + 1) * 160) for b in range(aec.blocks)])
        res[key + ".state"] = np.array([*aec.path, aec.echo_gain, aec.line_gain, aec.share, aec.seeds,
                                        aec.suppressed, aec.held, aec.floor, int(aec.state), aec.filter.offset])
np.savez(sys.argv[3], **res)
'''


def trace(root: Path, signals: Path, dest: Path) -> dict[str, np.ndarray]:
    subprocess.run([sys.executable, "-c", TRACE, str(root), str(signals), str(dest)], check=True)
    with np.load(dest) as f:
        return {k: f[k] for k in f.files}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, type=Path, help="the checkout to compare against (its root)")
    ap.add_argument("--new", type=Path, default=ROOT, help="the checkout under test (default: this one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        signals = Path(tmp) / "signals.npz"
        make_signals(signals)
        old = trace(args.old.resolve(), signals, Path(tmp) / "old.npz")
        new = trace(args.new.resolve(), signals, Path(tmp) / "new.npz")
    if sorted(old) != sorted(new):
        print("the two checkouts traced different runs")
        return 1
    bad = ulp = 0
    for key in sorted(old):
        a, b = old[key], new[key]
        if a.shape != b.shape:
            print(f"{key}: shape {a.shape} != {b.shape}")
            bad += 1
        elif key.endswith(".verdict"):
            if (n := int((a != b).sum())):
                print(f"{key}: {n} of {len(a)} blocks judged differently")
                bad += 1
        elif not np.array_equal(a, b):
            rel = float(np.max(np.abs(a.astype(np.float64) - b) / (np.abs(a) + 1e-9)))
            print(f"{key}: largest relative difference {rel:.1e}{' (ulp)' if rel <= 1e-6 else ''}")
            bad, ulp = bad + (rel > 1e-6), ulp + (rel <= 1e-6)
    runs = [k for k in old if k.endswith(".verdict")]
    blocks = sum(len(old[k]) for k in runs)
    print(f"{len(runs)} runs, {blocks} blocks: "
          + ("every verdict, bound and output identical" if not bad and not ulp else
             "every verdict identical, numbers within 1e-6" if not bad else f"{bad} differences"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
