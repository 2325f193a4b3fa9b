"""Capacity: how many concurrent *conversations* one machine holds, on cloud speech fakes and an LLM fake.

Why: ``cpu_per_call.py`` prices one call-second of a bridge; this answers the operator's question -- how many calls
per machine, and what breaks first. Every call is a conversation: the caller (``bench/load_caller.py``, its own
process(es)) speaks a question about every 10 s over line noise, the agent (``bench/agents/conversation.py``)
hears it on Deepgram live STT and answers a few sentences from a streaming LLM fake through Deepgram Aura TTS
(light fakes in a third process, ``bench/cloud_fakes.py --transcript``), and every 5th question barges in on the
answer. The server is a subprocess (``python -m telebridge serve``), one worker, or ``--workers 2`` on a Redis
server this script starts.

The run is a staircase on one server: calls are added up to each N of ``--n``, then after ``--ramp`` seconds a
``--window`` is measured. Per step:

* **server CPU**: user+sys of the server's process tree (supervisor and workers), % of one core;
* **lag p50/p99**: ``telebridge_frame_lag_seconds`` from ``/metrics`` (the window's observations only): caller
  audio received but not yet through the VAD when a batched pass delivers. Its floor, on an idle server, is set
  by the 32 ms VAD window and the 32 ms tick (audio waits for a whole window, then for the next pass), so an
  idle server's p99 is 30-40 ms by construction. The step's **excess** over the first step's p99 (the
  staircase's first, smallest N, same server) is what load adds: the issue's "p99 lag < 20 ms" is judged on it;
* **agent audio**: audio of the agent's turns ÷ (that audio + the time the caller's playback buffer ran dry inside
  a turn): 1.00 = real time; and the worst call's;
* **answers**: questions answered / asked in the window, latency (end of the question → first audio of the
  answer) p50/p95, barge-ins that got their ``clear``;
* **failures**: calls refused or dropped, unanswered questions, Twilio protocol errors, server log errors.
* also: the generator's own send lateness p99 (proves the load was real time), ``/healthz`` round trip p99,
  the fakes' and generators' CPU and other load on the machine.

Target (issue 11): >= 300 calls with p99 lag < 20 ms (over the idle floor), agent audio in real time, 0 failures.

Faults: ``--fault provider-down`` kills the Deepgram fakes mid-window (a provider outage); a second fakes process
is the agent's fallback (``BENCH_BACKUP_ORIGIN``): every call must apologise once, go on with the backup, and
keep answering. ``--fault instance-kill``: two servers on one Redis, half the calls on each, one server
SIGKILLed mid-window: the other's calls must go on untouched. Soak: ``bench/soak.py``.

Run:  .venv/bin/python bench/load.py [--n 50,100,200,300] [--workers 1,2] [--window 30] [--ramp 8]
                                     [--fault provider-down|instance-kill] [--gens 2] [--keep-logs]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cloud_fakes import fakes_process  # noqa: E402
from bench.cpu_per_call import HealthPoller, free_port, machine_busy, proc_cpu, thread_cpu  # noqa: E402
from bench.load_caller import QUESTION, CallerConfig, CallerStats, HangupStats  # noqa: E402
from bench.load_probe import (  # noqa: E402
    bucket_diff, counters, get_text, histograms, quantile, tree_cpu, wait_no_calls,
)
from bench.load_rig import (  # noqa: E402,F401  (re-exported for bench/soak.py and bench/load_faults.py)
    Generators, Server, late_percentile, redis_process, server_process,
)

LAG = "telebridge_frame_lag_seconds"
EOT_QUESTIONS, EOT_CPU = "telebridge_end_of_turn_questions", "telebridge_end_of_turn_cpu_seconds"
TARGET_N, TARGET_LAG_MS, TARGET_RATIO = 300, 20.0, 0.99


# =================================================================================================================
# One step of the staircase
# =================================================================================================================


@dataclass
class Step:
    label: str
    n: int
    window_s: float = 0.0
    server_cpu_s: float = 0.0
    gen_cpu_s: float = 0.0
    fakes_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0
    lag: dict[float, float] = field(default_factory=dict)
    stats: CallerStats | None = None
    health_p99_ms: float = math.nan
    lag_ref_p99_ms: float = math.nan  # the first step's p99 lag (the idle floor this step's excess is judged on)
    eot: dict[str, float] = field(default_factory=dict)  # end-of-turn questions by outcome over the window, and "cpu"
    setup_failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_pct(self) -> float:
        return 100 * self.server_cpu_s / max(1e-9, self.window_s)

    @property
    def lag_ms(self) -> tuple[float, float]:
        return 1000 * quantile(self.lag, 0.5), 1000 * quantile(self.lag, 0.99)

    @property
    def ratio(self) -> float:
        s = self.stats
        return s.agent_audio_s / (s.agent_audio_s + s.starved_s) if s and s.agent_audio_s else math.nan

    @property
    def failures(self) -> int:
        s = self.stats
        lost = (s.calls - s.streaming) if s else 0
        return len(self.setup_failures) + lost + (s.unanswered if s else 0)

    @property
    def lag_excess_ms(self) -> float:
        """p99 lag over the idle floor (the staircase's first step): what the load adds."""
        ref = self.lag_ref_p99_ms
        return max(0.0, self.lag_ms[1] - ref) if not math.isnan(ref) else math.nan

    def passes(self) -> bool:
        return (self.failures == 0 and self.lag_excess_ms < TARGET_LAG_MS and self.ratio >= TARGET_RATIO)


def measure_step(step: Step, server: Server, gens: Generators, *, window: float, other_pids: list[int],
                 redis_pid: int | None = None, during: Any = None) -> Step:
    text0 = get_text(server.port, "/metrics")
    m0, eot0 = histograms(text0, LAG).get("", {}), _eot_counters(text0)
    cpu0, gen0, mach0 = tree_cpu(server.pid), sum(proc_cpu(p) for p in gens.pids), machine_busy()
    fk0 = sum(_cpu(p) for p in other_pids)
    rd0 = _cpu(redis_pid) if redis_pid else 0.0
    t0 = time.monotonic()
    with HealthPoller(server.port, interval=0.25) as poller:
        step.stats = gens.window(window, during)
    step.window_s = time.monotonic() - t0
    step.server_cpu_s = tree_cpu(server.pid) - cpu0 if server.proc.poll() is None else math.nan
    step.gen_cpu_s = sum(proc_cpu(p) for p in gens.pids) - gen0
    step.fakes_cpu_s = sum(_cpu(p) for p in other_pids) - fk0
    step.redis_cpu_s = (_cpu(redis_pid) - rd0) if redis_pid else 0.0
    step.machine_cpu_s = machine_busy() - mach0
    step.health_p99_ms = poller.summary()[1]
    with contextlib.suppress(OSError):
        text = get_text(server.port, "/metrics")
        step.lag = bucket_diff(histograms(text, LAG).get("", {}), m0)
        step.eot = {k: v - eot0.get(k, 0.0) for k, v in _eot_counters(text).items()}
    return step


def _eot_counters(text: str) -> dict[str, float]:
    """End-of-turn questions by outcome ("answered", "skipped", "refused") and the model's CPU seconds ("cpu")."""
    out = {k.removeprefix("outcome="): v for k, v in counters(text, EOT_QUESTIONS).items()}
    out["cpu"] = sum(counters(text, EOT_CPU).values())
    return out


def _eot_note(step: Step) -> str | None:
    """Per step: what the end-of-turn model cost (questions per caller question, CPU per answer, share of the
    server's CPU)."""
    e, st = step.eot, step.stats
    answered = e.get("answered", 0.0)
    if not answered and not e.get("skipped") and not e.get("refused"):
        return None
    asked = st.questions if st and st.questions else math.nan
    per = 1000 * e.get("cpu", 0.0) / answered if answered else math.nan
    share = 100 * e.get("cpu", 0.0) / step.server_cpu_s if step.server_cpu_s else math.nan
    return (f"N={step.n} end-of-turn model: {answered:.0f} answered ({answered / asked:.1f} per caller question), "
            f"{e.get('skipped', 0):.0f} skipped (caller went on), {e.get('refused', 0):.0f} refused; "
            f"{per:.0f} ms CPU per answer, {share:.0f} % of the server's CPU "
            f"({1000 * e.get('cpu', 0.0) / max(1e-9, step.n * step.window_s):.1f} ms per call-second)")


def _cpu(pid: int | None) -> float:
    if not pid:
        return 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        return proc_cpu(pid)
    return 0.0


# =================================================================================================================
# Runs
# =================================================================================================================


def capacity(ns: list[int], workers: int, *, window: float, ramp: float, gens_count: int, workdir: Path,
             extra_env: dict[str, str], stop_on_fail: bool,
             profile_s: float = 0.0) -> tuple[list[Step], HangupStats | None, list[str]]:
    token = secrets.token_hex(16)
    label = f"{workers}w"
    steps: list[Step] = []
    with contextlib.ExitStack() as stack:
        fakes = stack.enter_context(fakes_process(free_port(), workdir / f"fakes-{label}.log", transcript=QUESTION))
        env = {**fakes.server_env, **extra_env}
        redis_pid = None
        if workers > 1:
            env["REDIS_URL"], redis_pid = stack.enter_context(redis_process(workdir))
        profile_to = workdir / f"profile-{label}.pstats" if profile_s > 0 and workers == 1 else None
        server = stack.enter_context(server_process(token, workdir / f"server-{label}.log", workers=workers, env=env,
                                                    profile_to=profile_to))
        gens = Generators(CallerConfig(urls=[server.url], token=token), gens_count, workdir)
        stack.callback(gens.close)
        have = 0
        for n in ns:
            step = Step(label, n)
            step.setup_failures = gens.open(n - have)
            have = n
            print(f"  {label}: {n} calls up ({len(step.setup_failures)} failed to start); measuring ...", flush=True)
            time.sleep(ramp)
            thr0 = thread_cpu(server.pid)
            measure_step(step, server, gens, window=window, other_pids=[fakes.proc.pid], redis_pid=redis_pid)
            step.lag_ref_p99_ms = steps[0].lag_ms[1] if steps else step.lag_ms[1]
            steps.append(step)
            _print_step(step)
            if workers == 1:
                step.notes.append(f"N={n} server threads: {_thread_split(server.pid, step.window_s, thr0)}")
            if (note := _eot_note(step)) is not None:
                step.notes.append(note)
            if stop_on_fail and (step.failures > max(3, n // 20) or step.ratio < 0.9):
                print(f"  {label}: stopping the staircase at N={n} (clearly over capacity)", flush=True)
                break
        if profile_to is not None:
            from bench.cpu_per_call import profile_server

            steps[-1].notes.append(profile_server(server.pid, profile_s, profile_to))
        done = gens.hangup()
        lingering = wait_no_calls(server.port, 20)
        errors = _log_errors(server.log)
        if lingering:
            errors.insert(0, f"{lingering} call(s) still live 20 s after every caller hung up")
        steps[-1].notes.append(_fakes_note(fakes.stats()))
    return steps, done, errors


def _thread_split(pid: int, window: float, before: dict[int, float]) -> str:
    """CPU % of one core per server thread over the window (the loop thread is the process's own id)."""
    after = thread_cpu(pid)
    rows = sorted(((after[t] - before.get(t, 0.0), t) for t in after), reverse=True)
    return ", ".join(f"{'loop' if t == pid else t}: {100 * c / max(1e-9, window):.0f}%" for c, t in rows[:6] if c > 0)


def _log_errors(log: Path) -> list[str]:
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = [ln for ln in text.splitlines() if " ERROR " in ln or "Traceback" in ln or ln.startswith("ERROR")]
    drops = text.count("fell behind")
    out = [ln[:220] for ln in lines[:5]]
    if len(lines) > 5:
        out.append(f"... {len(lines)} error lines in all")
    if drops:
        out.append(f"VAD backlog drops: {drops}")
    return out


def _fakes_note(s: dict[str, Any]) -> str:
    if not s:
        return "fakes: no counters"
    return (f"fakes: {s.get('listen_sockets', 0)} listen + {s.get('speak_sockets', 0)} speak sockets, "
            f"{s.get('audio_in_bytes', 0) / 8000:.0f} s caller audio in, {s.get('audio_out_bytes', 0) / 8000:.0f} s "
            f"TTS out, {s.get('transcripts', 0)} transcripts, {s.get('flushes', 0)} sentences")


# =================================================================================================================
# Report
# =================================================================================================================

HEAD = (f"{'run':4} {'N':>4} {'CPU %':>6} {'ms/call-s':>9} {'lag p50/p99/excess ms':>21} {'agent audio':>12} "
        f"{'answered':>9} {'answer p50/p95 s':>16} {'barge':>7} {'fail':>5} {'gen late p99':>12} {'healthz p99':>11} "
        f"{'gen/fakes/other %':>18}")


def _row(s: Step) -> str:
    st = s.stats or CallerStats()
    p50, p99 = s.lag_ms
    lat = np.array(st.answer_latency_s) if st.answer_latency_s else np.array([math.nan])
    other = s.machine_cpu_s - s.server_cpu_s - s.gen_cpu_s - s.fakes_cpu_s - s.redis_cpu_s
    pct = lambda x: 100 * x / max(1e-9, s.window_s)  # noqa: E731
    return (f"{s.label:4} {s.n:4d} {s.cpu_pct:6.0f} {1000 * s.server_cpu_s / max(1e-9, s.n * s.window_s):9.2f} "
            f"{f'{p50:.0f}/{p99:.0f}/{s.lag_excess_ms:.0f}':>21} {f'{s.ratio:.3f}/{st.worst_ratio:.2f}':>12} "
            f"{f'{st.answered}/{st.questions}':>9} "
            f"{f'{np.nanpercentile(lat, 50):.2f}/{np.nanpercentile(lat, 95):.2f}':>16} "
            f"{f'{st.cleared}/{st.barge_ins}':>7} {s.failures:5d} {late_percentile(st.late_hist, 0.99):9.1f} ms "
            f"{s.health_p99_ms:8.0f} ms {f'{pct(s.gen_cpu_s):.0f}/{pct(s.fakes_cpu_s):.0f}/{max(0.0, pct(other)):.0f}':>18}")


def _print_step(s: Step) -> None:
    print("    " + _row(s) + ("   PASS" if s.passes() else ""), flush=True)


def print_report(steps: list[Step], ends: dict[str, tuple[HangupStats | None, list[str]]]) -> None:
    print()
    print("Capacity: concurrent conversations (cloud STT/TTS fakes + LLM fake), one staircase per server layout")
    print(HEAD)
    print("-" * len(HEAD))
    for s in steps:
        print(_row(s) + ("  PASS" if s.passes() else ""))
    print("(CPU % = server process tree, % of one core (2 cores = 200); lag = telebridge_frame_lag_seconds over the "
          "window, p50/p99 and the p99's excess over the first step's; agent audio = real-time ratio, mean/worst call; answered = questions answered/asked in the window; "
          "barge = barge-ins cleared/tried; fail = calls refused or dropped + unanswered questions; gen late = the "
          "callers' own send lateness; gen/fakes/other = CPU of the callers, the fakes, everything else on the box)")
    best: dict[str, int] = {}
    for s in steps:
        if s.passes():
            best[s.label] = max(best.get(s.label, 0), s.n)
    print()
    for label in dict.fromkeys(s.label for s in steps):
        reached = best.get(label, 0)
        verdict = "target met" if reached >= TARGET_N else f"target ({TARGET_N}) NOT met"
        print(f"{label}: largest N passing (p99 lag < {TARGET_LAG_MS:.0f} ms over the first step's, agent audio >= "
              f"{TARGET_RATIO}, "
              f"0 failures): {reached or 'none'} -- {verdict}")
        done, errors = ends.get(label, (None, []))
        if done is not None:
            print(f"  all calls: {done.answered}/{done.questions} questions answered, {done.closed_by_server} calls "
                  f"closed by the server, protocol errors {done.protocol_errors[:3] or 'none'}")
            for f in done.failures[:3]:
                print(f"  failure: {f}")
        for e in errors:
            print(f"  server log: {e}")
        for s in steps:
            if s.label == label:
                for note in s.notes:
                    print(f"  {note}")
                for f in s.setup_failures[:3]:
                    print(f"  N={s.n} set-up failure: {f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="25,50,100,150,200,250,300", help="staircase of concurrent calls")
    ap.add_argument("--workers", default="1,2", help="server layouts to measure (worker processes)")
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--ramp", type=float, default=8.0, help="seconds after the calls of a step are up")
    ap.add_argument("--gens", type=int, default=0, help="caller processes (default: 1 per 150 calls, at least 1)")
    ap.add_argument("--fault", choices=["provider-down", "instance-kill"], help="a fault run instead (see doc)")
    ap.add_argument("--no-stop", action="store_true", help="climb the whole staircase even when over capacity")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--keep-logs", action="store_true")
    ap.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                    help="1 worker: cProfile the server's event loop for SECONDS after the last window")
    ap.add_argument("--traced-serve", help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    if "--traced-serve" in argv and "--" in argv:  # internal: the server under tracemalloc (bench/soak.py --trace)
        from bench.load_probe import traced_serve

        cut = argv.index("--")
        traced_serve(argv[cut + 1 :], argv[argv.index("--traced-serve") + 1])
        return
    args = ap.parse_args()
    ns = sorted(int(x) for x in args.n.split(",") if x.strip())
    extra = dict(kv.split("=", 1) for kv in args.server_env)
    gens = args.gens or max(1, math.ceil(max(ns) / 150))
    workdir = Path(tempfile.mkdtemp(prefix="telebridge-load-"))
    print(f"load: N={ns}, workers {args.workers}, window {args.window:.0f} s, ramp {args.ramp:.0f} s, {gens} caller "
          f"process(es), {os.cpu_count()} CPUs; logs in {workdir}", flush=True)
    ok = True
    if args.fault:
        from bench.load_faults import run_fault

        ok = run_fault(args.fault, ns[-1], window=args.window, ramp=args.ramp, gens_count=gens, workdir=workdir,
                       extra_env=extra)
    else:
        steps: list[Step] = []
        ends: dict[str, tuple[HangupStats | None, list[str]]] = {}
        for workers in (int(w) for w in args.workers.split(",")):
            try:
                got, done, errors = capacity(ns, workers, window=args.window, ramp=args.ramp, gens_count=gens,
                                             workdir=workdir, extra_env=extra, stop_on_fail=not args.no_stop,
                                             profile_s=args.profile)
            except Exception as exc:  # noqa: BLE001 - one failed layout must not lose the other's figures
                print(f"  {workers} worker(s) FAILED: {type(exc).__name__}: {exc} (logs in {workdir})", flush=True)
                ok = False
                continue
            steps += got
            ends[f"{workers}w"] = (done, errors)
            ok = ok and not errors
        print_report(steps, ends)
    if not args.keep_logs and ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs kept in {workdir}")


if __name__ == "__main__":
    main()
