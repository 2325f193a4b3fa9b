"""Soak: waves of concurrent calls against long-running servers; does anything grow?

Why: a phone service runs for weeks. Memory, threads, file descriptors or asyncio tasks that grow with every call
end in an out-of-memory kill or a stuck process at the worst time. This runs one server per ``--variants`` entry
(``python -m telebridge serve`` with ``bench/agents/cloud_talker.py``: Deepgram live STT and Aura TTS against
the light fakes of ``bench/cloud_fakes.py`` in their own process, so the servers spend their CPU on the calls'
transport, VAD, speech sockets and playback, not on models) and places waves of ``--wave-calls`` concurrent calls
on each, side by side (``bench/cpu_per_call.py``'s load generator in a process per wave and server: signed
webhook, Media Streams WebSocket, 20 ms μ-law line noise paced in real time, marks echoed), each wave live for
``--wave-seconds`` and then hung up, until ``--minutes`` have passed.

After each wave, once the server lists no live call and a few seconds have passed (its idle trim,
``telebridge/memory.py``), each server process is sampled idle: RSS, threads and open file descriptors from
``/proc``, asyncio tasks from ``GET /v1/health``'s ``process``. Sampled idle, the figures compare like with like.

Variants (what the remedies of ``telebridge/memory.py`` do, measured in the same run): ``on`` (as shipped:
``MALLOC_ARENA_MAX=2``, ``malloc_trim(0)`` after calls end, a full ``gc.collect()`` when the last call ends),
``off`` (none: glibc's and Python's defaults, as before the fix), ``nogc`` (arenas and trim, no idle collection),
``arenas`` (two arenas only), ``trim`` (trim only).

The trend is judged after warm-up (the first quarter of the waves, at least 2: lazily created threads, the
bounded histories of finished calls and the console fill there): RSS growth beyond ``--max-growth`` (5 %) from
the end of warm-up to the end (the median of three neighbouring samples at each end), or any thread, descriptor
or task more than at the end of warm-up, is flagged; the slope of RSS over calls after warm-up is printed in kB
per call.

Run:  .venv/bin/python bench/soak.py [--minutes 60] [--wave-calls 30] [--wave-seconds 30] [--variants on,off]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cloud_fakes import fakes_process  # noqa: E402
from bench.cpu_per_call import (  # noqa: E402
    AGENT_FILES, DoneStats, GenConfig, _lingering_calls, free_port, generator_process, served,
)
from telebridge.memory import COLLECT_DELAY, IDLE_TRIM_EVERY  # noqa: E402

IDLE_SETTLE = IDLE_TRIM_EVERY + COLLECT_DELAY + 2.0  # s from the last call ending to the idle sample (after the idle trim)
# variant: (two arenas, malloc_trim after calls, a full gc.collect when the process goes idle)
VARIANTS = {"on": (True, True, True), "off": (False, False, False), "nogc": (True, True, False),
            "arenas": (True, False, False), "trim": (False, True, False)}


@dataclass
class Sample:
    wave: int
    calls: int  # calls placed on this server so far
    minutes: float
    rss_mb: float
    threads: int
    fds: int
    tasks: int
    trims: int = 0
    trim_ms_max: float = 0.0
    failures: int = 0  # calls of the wave refused, closed by the server or with protocol errors


@dataclass
class Series:
    variant: str
    samples: list[Sample] = field(default_factory=list)
    idle: Sample | None = None  # before any call
    warm: int = 2  # waves of warm-up
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # server log lines
    vad_drops: int = 0  # "VAD stream fell behind" warnings (a CPU-starved server; not a leak)

    @property
    def baseline(self) -> Sample | None:
        return self.samples[self.warm - 1] if len(self.samples) > self.warm else None

    @property
    def last(self) -> Sample:
        return self.samples[-1]

    def _rss_around(self, wave: int) -> float:
        near = [s.rss_mb for s in self.samples if abs(s.wave - wave) <= 1]  # one odd sample is not a trend
        return float(np.median(near)) if near else math.nan

    @property
    def rss_growth(self) -> float:
        """Relative RSS growth from the end of warm-up to the end (medians of three samples each; 0.05 = 5 %)."""
        b = self.baseline
        if b is None:
            return math.nan
        end = self.last.wave - 1 if self.last.wave - 1 > b.wave + 1 else self.last.wave
        return self._rss_around(end) / self._rss_around(b.wave) - 1.0

    def kb_per_call(self) -> float:
        b = self.baseline
        after = [s for s in self.samples if b is not None and s.wave >= b.wave]
        if len(after) < 3:
            return math.nan
        slope = np.polyfit([s.calls for s in after], [s.rss_mb for s in after], 1)[0]
        return float(slope * 1000)

    def leaks(self, max_growth: float) -> list[str]:
        b = self.baseline
        if b is None:
            return []
        out = []
        if self.rss_growth > max_growth:
            out.append(f"RSS grew {100 * self.rss_growth:.1f} % after warm-up")
        for name in ("threads", "fds", "tasks"):
            most = max(getattr(s, name) for s in self.samples[self.warm - 1 :])
            if most > getattr(b, name):
                out.append(f"{name}: {getattr(b, name)} after warm-up, up to {most} later")
        return out


# =================================================================================================================
# The server, with the allocator remedies on or off
# =================================================================================================================


def serve_variant(variant: str, argv: list[str]) -> None:
    """``telebridge serve`` with ``telebridge/memory.py``'s remedies switched per ``variant`` (internal mode)."""
    from telebridge import cli, memory

    arenas, trim, collect = VARIANTS[variant]
    if not arenas:
        memory.configure_allocator = lambda: None  # glibc's default arenas (8 per core)
    if not trim:
        memory.trim = lambda: None  # the Trimmer runs, nothing is given back
    if not collect:
        memory.Trimmer._collect = lambda self: None  # cyclic garbage waits for Python's own oldest-generation pass
    sys.exit(cli.main(argv))


@contextlib.contextmanager
def server_process(variant: str, port: int, token: str, log_path: Path, env_extra: dict[str, str]
                   ) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    for key in ("TELEBRIDGE_PUBLIC_URL", "TELEBRIDGE_AGENT", "OPENAI_API_KEY", "TELEBRIDGE_LLM_BASE_URL",
                "MALLOC_ARENA_MAX"):
        env.pop(key, None)
    env.update(HF_HUB_OFFLINE="1", TWILIO_AUTH_TOKEN=token, TELEBRIDGE_LOG_LEVEL="warning",
               TELEBRIDGE_MAX_CALLS="200", TELEBRIDGE_DRAIN_TIMEOUT="3",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), **env_extra)
    serve = ["serve", "--agent", str(AGENT_FILES["cloud"]), "--port", str(port)]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-variant", variant, "--", *serve]
    with served(cmd, env, log_path, port) as proc:
        yield proc


def health(port: int) -> dict[str, Any]:
    with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/v1/health")
            body = json.loads(conn.getresponse().read())
            return body if isinstance(body, dict) else {}
        finally:
            conn.close()
    return {}


def sample(pid: int, port: int, wave: int, calls: int, t0: float) -> Sample:
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    process = health(port).get("process") or {}  # before counting fds: its socket is closed by then
    return Sample(wave, calls, (time.monotonic() - t0) / 60, rss_kb / 1024, len(os.listdir(f"/proc/{pid}/task")),
                  len(os.listdir(f"/proc/{pid}/fd")), int(process.get("asyncio_tasks", -1)),
                  int(process.get("malloc_trims", 0)), float(process.get("malloc_trim_ms_max", 0.0)))


@dataclass
class Server:
    variant: str
    proc: subprocess.Popen[bytes]
    port: int
    token: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def soak_rig(workdir: Path, variants: list[str]) -> Iterator[list[Server]]:
    """The cloud fakes and one server per variant (all on the same fakes)."""
    with contextlib.ExitStack() as stack:
        fakes = stack.enter_context(fakes_process(free_port(), workdir / "fakes.log"))
        servers = []
        for v in variants:
            port, token, log = free_port(), secrets.token_hex(16), workdir / f"server-{v}.log"
            proc = stack.enter_context(server_process(v, port, token, log, fakes.server_env))
            servers.append(Server(v, proc, port, token, log))
        yield servers


def run_wave(servers: list[Server], calls: int, seconds: float, workdir: Path, wave: int
             ) -> dict[str, tuple[list[str], DoneStats | None]]:
    """``calls`` concurrent calls on every server for ``seconds``, then every caller hangs up."""
    out: dict[str, tuple[list[str], DoneStats | None]] = {}
    with contextlib.ExitStack() as stack:
        ios = {}
        for s in servers:
            cfg = GenConfig(url=s.url, token=s.token, calls=calls, seed=wave)
            _, io = stack.enter_context(generator_process(cfg, workdir / f"generator-{s.variant}.log"))
            ios[s.variant] = io
        for io in ios.values():
            io.expect("hello", timeout=120)
            io.send("open")
        for v, io in ios.items():
            out[v] = (list(io.expect("ready", timeout=60 + calls * 2)["failures"]), None)
        time.sleep(seconds)
        for io in ios.values():
            io.send("stop")
        for v, io in ios.items():
            out[v] = (out[v][0], DoneStats.model_validate(io.expect("done", timeout=120)))
    return out


def log_problems(path: Path) -> list[str]:
    """Errors in a server log (the first few)."""
    text = path.read_text(errors="replace") if path.is_file() else ""
    return [ln for ln in text.splitlines() if " ERROR " in ln or "Traceback" in ln][:5]


def log_count(path: Path, needle: str) -> int:
    return (path.read_text(errors="replace") if path.is_file() else "").count(needle)


def soak(*, minutes: float, wave_calls: int, wave_seconds: float, variants: list[str], workdir: Path,
         warmup_waves: int | None = None, on_sample: Any = None) -> list[Series]:
    series = {v: Series(v) for v in variants}
    with soak_rig(workdir, variants) as servers:
        t0 = time.monotonic()
        for s in servers:
            series[s.variant].idle = sample(s.proc.pid, s.port, 0, 0, t0)
            if on_sample:
                on_sample(s.variant, series[s.variant].idle)
        wave = 0
        deadline = t0 + minutes * 60
        while time.monotonic() < deadline:
            wave += 1
            results = run_wave(servers, wave_calls, wave_seconds, workdir, wave)
            for s in servers:
                still = _lingering_calls(s.port, wait=30.0)
                if still:
                    series[s.variant].failures.append(f"wave {wave}: {still} call(s) live 30 s after hanging up")
            time.sleep(IDLE_SETTLE)
            for s in servers:
                refused, done = results[s.variant]
                smp = sample(s.proc.pid, s.port, wave, wave * wave_calls, t0)
                smp.failures = len(refused) + (done.closed_by_server + len(done.protocol_errors) if done else 0)
                series[s.variant].failures += [f"wave {wave}: {f}" for f in refused]
                series[s.variant].samples.append(smp)
                if on_sample:
                    on_sample(s.variant, smp)
    for sr in series.values():
        sr.warm = warmup_waves if warmup_waves is not None else max(2, len(sr.samples) // 4)
        sr.errors = log_problems(workdir / f"server-{sr.variant}.log")
        sr.vad_drops = log_count(workdir / f"server-{sr.variant}.log", "fell behind")
    return list(series.values())


# =================================================================================================================
# Report
# =================================================================================================================

HEAD = (f"{'variant':>7} {'wave':>4} {'calls':>6} {'min':>6} {'RSS MB':>8} {'threads':>7} {'fds':>5} {'tasks':>6} "
        f"{'trims':>5} {'trim ms':>7} {'fail':>4}")


def fmt(variant: str, s: Sample) -> str:
    return (f"{variant:>7} {s.wave:4d} {s.calls:6d} {s.minutes:6.1f} {s.rss_mb:8.1f} {s.threads:7d} {s.fds:5d} "
            f"{s.tasks:6d} {s.trims:5d} {s.trim_ms_max:7.1f} {s.failures:4d}")


def print_report(all_series: list[Series], max_growth: float) -> bool:
    ok = True
    print()
    print("Soak: each server sampled idle after each wave (trim ms: the longest malloc_trim so far)")
    for sr in all_series:
        print()
        print(HEAD)
        print("-" * len(HEAD))
        if sr.idle:
            print(fmt(sr.variant, sr.idle) + "   (before any call)")
        for s in sr.samples:
            print(fmt(sr.variant, s) + ("   <- warm-up ends" if s is sr.baseline else ""))
    print()
    for sr in all_series:
        b = sr.baseline
        if b is None or sr.idle is None:
            print(f"{sr.variant}: too few waves to judge a trend (need more than {sr.warm})")
            ok = False
            continue
        leaks = sr.leaks(max_growth)
        print(f"{sr.variant:>7}: RSS {sr.idle.rss_mb:.0f} MB idle before any call, {b.rss_mb:.0f} after warm-up "
              f"(wave {b.wave}), {sr.last.rss_mb:.0f} at the end (wave {sr.last.wave}, {sr.last.calls} calls, "
              f"{sr.last.minutes:.0f} min): {100 * sr.rss_growth:+.1f} % after warm-up (medians of 3), slope "
              f"{sr.kb_per_call():+.1f} kB/call; threads {b.threads} -> {sr.last.threads}, fds {b.fds} -> "
              f"{sr.last.fds}, tasks {b.tasks} -> {sr.last.tasks} | "
              + ("GROWTH: " + "; ".join(leaks) if leaks else f"flat within {100 * max_growth:.0f} %"))
        if sr.vad_drops:
            print(f"         {sr.vad_drops} 'VAD stream fell behind' warning(s) (CPU-starved moments; see the log)")
        for f in sr.failures[:5]:
            print(f"         failure: {f}")
        for e in sr.errors:
            print(f"         server log: {e}")
        if sr.variant == "on":
            ok = ok and not leaks and not sr.failures and not sr.errors
    return ok


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["--serve-variant"] and "--" in argv:  # internal: the server process
        serve_variant(argv[1], argv[argv.index("--") + 1 :])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--wave-calls", type=int, default=30)
    ap.add_argument("--wave-seconds", type=float, default=30.0)
    ap.add_argument("--variants", default="on,off", help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--warmup-waves", type=int, help="default: a quarter of the waves, at least 2")
    ap.add_argument("--max-growth", type=float, default=0.05)
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if unknown := [v for v in variants if v not in VARIANTS]:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    workdir = Path(tempfile.mkdtemp(prefix="telebridge-soak-"))
    print(f"soak: {args.minutes:g} min of waves of {args.wave_calls} calls x {args.wave_seconds:g} s on each of "
          f"{variants}; logs in {workdir}", flush=True)
    print("  " + HEAD, flush=True)
    series = soak(minutes=args.minutes, wave_calls=args.wave_calls, wave_seconds=args.wave_seconds,
                  variants=variants, workdir=workdir, warmup_waves=args.warmup_waves,
                  on_sample=lambda v, s: print("  " + fmt(v, s), flush=True))
    ok = print_report(series, args.max_growth)
    if ok and not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs kept in {workdir}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
