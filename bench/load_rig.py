"""The processes ``bench/load.py``, ``bench/soak.py`` and ``bench/load_faults.py`` run: a throwaway Redis, the
telebridge server (``python -m telebridge serve --agent bench/agents/conversation.py``, optionally under
tracemalloc or cProfile), and the caller processes (``bench/load_caller.py``), driven over stdin/stdout."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cpu_per_call import LineReader, free_port, served  # noqa: E402
from bench.load_caller import LATE_BINS, CallerConfig, CallerStats, HangupStats  # noqa: E402

AGENT = ROOT / "bench" / "agents" / "conversation.py"


@contextlib.contextmanager
def redis_process(workdir: Path) -> Iterator[tuple[str, int]]:
    """A throwaway redis-server (no persistence) on a free port: (its URL, its pid)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise RuntimeError("redis-server is not installed (Debian package redis-server): needed for --workers 2")
    port = free_port()
    data = workdir / f"redis-{port}"
    data.mkdir()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", "",
                             "--appendonly", "no", "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        import socket

        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def server_env(token: str, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("TELEBRIDGE_PUBLIC_URL", "TELEBRIDGE_AGENT", "OPENAI_API_KEY", "TELEBRIDGE_LLM_BASE_URL", "REDIS_URL",
                "TELEBRIDGE_WORKERS", "TELEBRIDGE_API_KEYS", "TELEBRIDGE_CONSOLE_TOKEN", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(key, None)
    env.update(HF_HUB_OFFLINE="1", TWILIO_AUTH_TOKEN=token, TELEBRIDGE_LOG_LEVEL="warning",
               TELEBRIDGE_MAX_CALLS="1000", TELEBRIDGE_DRAIN_TIMEOUT="3",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


@contextlib.contextmanager
def server_process(token: str, log: Path, *, workers: int = 1, env: dict[str, str] | None = None,
                   trace_dir: Path | None = None, port: int | None = None,
                   profile_to: Path | None = None) -> Iterator[Server]:
    """``python -m telebridge serve --agent bench/agents/conversation.py`` (``trace_dir``: under
    :func:`bench.load_probe.traced_serve`, for the leak investigation; ``profile_to``: under
    ``cpu_per_call.py``'s dormant cProfile)."""
    port = port or free_port()
    serve = ["serve", "--agent", str(AGENT), "--port", str(port), "--workers", str(workers)]
    cmd = [sys.executable, "-m", "telebridge", *serve]
    if trace_dir is not None:
        cmd = [sys.executable, str(ROOT / "bench" / "load.py"), "--traced-serve", str(trace_dir), "--", *serve]
    if profile_to is not None:
        cmd = [sys.executable, str(ROOT / "bench" / "cpu_per_call.py"), "--profiled-serve", str(profile_to), "--",
               *serve]
    env = server_env(token, env or {})
    with served(cmd, env, log, port, append=True, healthy_within=240, stop_within=30) as proc:
        if workers > 1:
            time.sleep(3.0)  # /healthz answered by one worker; let the others finish loading too
        yield Server(proc, port, log)


class Generators:
    """``--gens`` caller processes (``bench/load_caller.py``); calls are spread over them, commands broadcast."""

    def __init__(self, cfg: CallerConfig, count: int, workdir: Path) -> None:
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.procs: list[subprocess.Popen[str]] = []
        self.readers: list[LineReader] = []
        self.logs: list[Any] = []
        for g in range(count):
            c = cfg.model_copy(update={"first_index": cfg.first_index + g * 100_000, "seed": cfg.seed + g})
            log = open(workdir / f"generator-{g}-{os.getpid()}-{time.monotonic_ns()}.log", "w")  # noqa: SIM115
            self.logs.append(log)
            proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "load_caller.py"), c.model_dump_json()],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                                    cwd=workdir)
            self.procs.append(proc)
            self.readers.append(LineReader(proc))
        for r in self.readers:
            r.expect("hello", timeout=180)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def open(self, n: int) -> list[str]:
        shares = [n // len(self.procs) + (1 if i < n % len(self.procs) else 0) for i in range(len(self.procs))]
        for r, k in zip(self.readers, shares):
            r.send(f"open {k}")
        failures: list[str] = []
        for r, k in zip(self.readers, shares):
            failures += r.expect("ready", timeout=120 + 2 * k)["failures"]
        return failures

    def window(self, seconds: float, during: Any = None) -> CallerStats:
        for r in self.readers:
            r.send("start")
        for r in self.readers:
            r.expect("started", timeout=30)
        if during is not None:
            during(seconds)
        else:
            time.sleep(seconds)
        for r in self.readers:
            r.send("end")
        parts = [CallerStats.model_validate(r.expect("ended", timeout=60)["stats"]) for r in self.readers]
        return merge_stats(parts)

    def hangup(self) -> HangupStats:
        for r in self.readers:
            r.send("hangup")
        parts = [HangupStats.model_validate(r.expect("done", timeout=120)) for r in self.readers]
        return HangupStats(
            calls=sum(p.calls for p in parts), closed_by_server=sum(p.closed_by_server for p in parts),
            protocol_errors=[e for p in parts for e in p.protocol_errors][:10],
            questions=sum(p.questions for p in parts), answered=sum(p.answered for p in parts),
            unanswered=sum(p.unanswered for p in parts), failures=[f for p in parts for f in p.failures][:10])

    def close(self) -> None:
        for p in self.procs:
            with contextlib.suppress(OSError):
                assert p.stdin is not None
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()


def merge_stats(parts: list[CallerStats]) -> CallerStats:
    hist = np.sum([np.array(p.late_hist) for p in parts if p.late_hist], axis=0) if parts else np.zeros(1)
    return CallerStats(
        window_s=max(p.window_s for p in parts), calls=sum(p.calls for p in parts),
        streaming=sum(p.streaming for p in parts), late_hist=[int(x) for x in np.atleast_1d(hist)],
        late_max_ms=max(p.late_max_ms for p in parts), questions=sum(p.questions for p in parts),
        answered=sum(p.answered for p in parts), unanswered=sum(p.unanswered for p in parts),
        answer_latency_s=[x for p in parts for x in p.answer_latency_s], barge_ins=sum(p.barge_ins for p in parts),
        cleared=sum(p.cleared for p in parts), agent_audio_s=sum(p.agent_audio_s for p in parts),
        starved_s=sum(p.starved_s for p in parts), worst_ratio=min(p.worst_ratio for p in parts))


def late_percentile(hist: list[int], q: float) -> float:
    counts = np.array(hist, float)
    if counts.sum() <= 0:
        return math.nan
    cum = np.cumsum(counts)
    i = int(np.searchsorted(cum, q * cum[-1]))
    return float(LATE_BINS[min(i + 1, len(LATE_BINS) - 1)])
