"""What ``bench/load.py`` reads from outside the server: process-tree CPU, memory and handles from ``/proc``, the
Prometheus histograms from ``/metrics``, the ``process`` figures of ``/v1/health``, and (``--trace``) the
server's own allocation snapshots.

Nothing here asks the server to do work on its audio path: ``/metrics`` and ``/v1/health`` are cheap reads, and the
allocation snapshots are taken only between soak waves, when no call is live.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import http.client
import json
import math
import os
import pickle
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cpu_per_call import proc_cpu  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


# --- the process tree (a supervisor and its workers) -----------------------------------------------------------
def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (``telebridge serve --workers N``: the supervisor and its workers)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children(p)
    return found


def tree_cpu(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += proc_cpu(p)
    return total


@dataclass
class ProcFigures:
    rss_mb: float
    threads: int
    fds: int


def proc_figures(pid: int) -> ProcFigures:
    with open(f"/proc/{pid}/statm") as f:
        rss_pages = int(f.read().split()[1])
    threads = len(os.listdir(f"/proc/{pid}/task"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return ProcFigures(rss_pages * PAGE / 1e6, threads, fds)


# --- HTTP reads --------------------------------------------------------------------------------------------------
def get_json(port: int, path: str, timeout: float = 10.0) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def get_text(port: int, path: str, timeout: float = 10.0) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def live_calls(port: int) -> int:
    with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
        return int(get_json(port, "/healthz", timeout=5).get("calls", 0))
    return -1


def wait_no_calls(port: int, timeout: float) -> int:
    """Wait until the server reports no live call; returns how many were still live at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        n = live_calls(port)
        if n == 0 or time.monotonic() > deadline:
            return n
        time.sleep(0.25)


# --- Prometheus histograms ---------------------------------------------------------------------------------------
Buckets = dict[str, dict[float, float]]  # label key -> {upper bound: cumulative count}


def _samples(text: str, name: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(sample name, labels without ``pid``, value) of metric family ``name`` in Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        if family.name == name:
            for sample in family.samples:
                yield sample.name, {k: v for k, v in sample.labels.items() if k != "pid"}, sample.value


def histograms(text: str, name: str) -> Buckets:
    """Cumulative bucket counts of histogram ``name`` by its labels (other than ``le``), summed over workers."""
    out: Buckets = {}
    for sample, labels, value in _samples(text, name):
        if not sample.endswith("_bucket"):
            continue
        le = float(labels.pop("le"))
        key = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        out.setdefault(key, {})
        out[key][le] = out[key].get(le, 0.0) + value
    return out


def counters(text: str, name: str) -> dict[str, float]:
    """Values of counter ``name`` (its family name, without ``_total``) by its labels, summed over workers."""
    out: dict[str, float] = {}
    for sample, labels, value in _samples(text, name):
        if sample.endswith("_total"):
            key = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            out[key] = out.get(key, 0.0) + value
    return out


def bucket_diff(after: dict[float, float], before: dict[float, float] | None) -> dict[float, float]:
    before = before or {}
    return {le: after[le] - before.get(le, 0.0) for le in sorted(after)}


def quantile(buckets: dict[float, float], q: float) -> float:
    """Prometheus' histogram_quantile: linear within the bucket holding the q-th observation (nan if empty)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return prev_bound
            width = count - prev_count
            return prev_bound + (le - prev_bound) * ((rank - prev_count) / width if width > 0 else 1.0)
        prev_bound, prev_count = le, count
    return prev_bound


def observations(buckets: dict[float, float]) -> int:
    return int(max(buckets.values(), default=0.0))


# --- allocation tracing in the server process (--trace) --------------------------------------------------------
def traced_serve(argv: list[str], out_dir: str) -> None:
    """``telebridge serve`` with tracemalloc on (25 frames) and two signals, for the leak investigation:

    * SIGUSR1: ``gc.collect()``, then write a tracemalloc snapshot (``snap-<k>.pickle``) and the live objects
      counted by type (``types-<k>.json``, with RSS) into ``out_dir``;
    * SIGUSR2: ``malloc_trim(0)`` (glibc): RSS before and after into ``trim-<k>.json`` -- memory glibc holds
      free but has not returned (fragmentation, arenas) shows as the difference.

    Signal handlers run on the main thread (the event loop's) between bytecodes: the server stalls while they run,
    which is why the soak takes them only between waves.
    """
    import tracemalloc

    frames = int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "25"))  # 0: object counts and malloc_trim only
    if frames:
        tracemalloc.start(frames)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seq = {"snap": 0, "trim": 0}

    def snapshot(signum: int, frame: object) -> None:
        seq["snap"] += 1
        k = seq["snap"]
        gc.collect()
        if tracemalloc.is_tracing():
            with open(out / f"snap-{k}.pickle.tmp", "wb") as f:
                pickle.dump(tracemalloc.take_snapshot(), f)
            os.replace(out / f"snap-{k}.pickle.tmp", out / f"snap-{k}.pickle")
        counts = Counter(type(o).__qualname__ for o in gc.get_objects())
        figures = proc_figures(os.getpid())
        try:
            import asyncio

            tasks = sorted(f"{t.get_name()}: {t.get_coro()}"[:900] for t in asyncio.all_tasks())
        except RuntimeError:
            tasks = []
        with open(out / f"types-{k}.json.tmp", "w") as f:
            json.dump({"rss_mb": figures.rss_mb, "traced_mb": tracemalloc.get_traced_memory()[0] / 1e6,
                       "types": counts.most_common(400), "tasks": tasks}, f)
        os.replace(out / f"types-{k}.json.tmp", out / f"types-{k}.json")

    def trim(signum: int, frame: object) -> None:
        seq["trim"] += 1
        before = proc_figures(os.getpid()).rss_mb
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        after = proc_figures(os.getpid()).rss_mb
        with open(out / f"trim-{seq['trim']}.json", "w") as f:
            json.dump({"before_mb": before, "after_mb": after}, f)

    signal.signal(signal.SIGUSR1, snapshot)
    signal.signal(signal.SIGUSR2, trim)
    if os.environ.get("BENCH_TRACE_TTS_SOCKETS") == "1":
        _note_tts_socket_origins()
    from telebridge.cli import main as telebridge_main

    sys.exit(telebridge_main(argv))


def _note_tts_socket_origins() -> None:
    """Debugging aid: each Deepgram TTS socket's reader task remembers who opened it (the task, the stack, whether
    the session was already closed), so a reader still alive after its call shows in the snapshot's task list."""
    import asyncio
    import traceback

    from telebridge.providers.tts import deepgram

    original = deepgram.DeepgramSession.connect

    async def connect(self: Any) -> None:
        await original(self)
        task = asyncio.current_task()
        origin = (f"opened by {task.get_name() if task else '?'}, session closed={self._closed}, "
                  f"stack: {' <- '.join(reversed([f'{Path(f.filename).name}:{f.lineno}' for f in traceback.extract_stack(limit=12)[:-1]]))}")
        if self._reader is not None:
            self._reader.set_name(self._reader.get_name() + " [" + origin + "]")

    deepgram.DeepgramSession.connect = connect  # type: ignore[method-assign]


def wait_file(path: Path, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def take_snapshot(pid: int, out_dir: Path, k: int) -> dict[str, Any] | None:
    os.kill(pid, signal.SIGUSR1)
    if not wait_file(out_dir / f"types-{k}.json"):
        return None
    return json.loads((out_dir / f"types-{k}.json").read_text())


def trim_experiment(pid: int, out_dir: Path, k: int) -> dict[str, float] | None:
    os.kill(pid, signal.SIGUSR2)
    if not wait_file(out_dir / f"trim-{k}.json", 30):
        return None
    time.sleep(0.05)
    return json.loads((out_dir / f"trim-{k}.json").read_text())


def snapshot_diff(out_dir: Path, a: int, b: int, top: int = 15) -> list[str]:
    """The allocation sites that grew most between snapshots ``a`` and ``b`` (by traceback's innermost frames)."""
    import tracemalloc

    with open(out_dir / f"snap-{a}.pickle", "rb") as f:
        first = pickle.load(f)
    with open(out_dir / f"snap-{b}.pickle", "rb") as f:
        second = pickle.load(f)
    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, pickle.__file__)]
    first, second = first.filter_traces(keep), second.filter_traces(keep)
    lines = []
    for stat in second.compare_to(first, "traceback")[:top]:
        frames = [f"{Path(fr.filename).name}:{fr.lineno}" for fr in stat.traceback[-6:]]
        lines.append(f"{stat.size_diff / 1e3:+9.1f} kB {stat.count_diff:+7d} blocks  " + " <- ".join(reversed(frames)))
    return lines


def types_diff(before: dict[str, Any], after: dict[str, Any], top: int = 15) -> list[str]:
    a, b = dict(before["types"]), dict(after["types"])
    grown = sorted(((b.get(k, 0) - a.get(k, 0), k) for k in set(a) | set(b)), reverse=True)[:top]
    return [f"{d:+8d}  {name}" for d, name in grown if d]
