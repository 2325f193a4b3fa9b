"""Prometheus metrics: the collectors, the small ``record`` functions the pipeline calls, and ``GET /metrics``.

Cheap by design: every hook is a dictionary lookup and a counter increment or a histogram observation, made per
call, per turn, per barge-in, per provider error or per VAD pass (31 a second for the whole process) -- never per
audio frame. The frame-lag histogram is sampled (one VAD pass in :data:`LAG_SAMPLE_EVERY`).

One process: the default registry (our series plus the standard ``process_*``, ``python_gc_*`` and
``python_info`` collectors). Several worker processes behind one port: set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty directory writable by every worker *before* they start (prometheus-client then keeps each worker's values
in memory-mapped files there); any worker answering ``/metrics`` sums every worker's series, ``calls_active``
counts live workers only, and ``process_*`` is reported per live worker with a ``pid`` label. Empty the directory
whenever the server (re)starts, as prometheus-client requires.

What each series measures is spelled out in README "Metrics and logs".
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = [
    "MULTIPROC_ENV", "call_started", "call_ended", "call_outcome", "turn_latency", "barge_in", "call_event",
    "provider_error", "vad_pass", "end_of_turn_questions", "end_of_turn_cpu", "render", "metrics_endpoint",
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LAG_SAMPLE_EVERY = 16  # VAD passes (32 ms each): one frame-lag sample per live stream about every half second

_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
_BARGE_IN_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
_LAG_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

CALLS_ACTIVE = Gauge(
    "telebridge_calls_active", "Conversations in progress (phone calls and realtime sessions).",
    ["transport", "direction"], multiprocess_mode="livesum",
)
CALLS_TOTAL = Counter(
    "telebridge_calls", "Conversations finished, by how they ended.", ["transport", "direction", "outcome"],
)
TURN_LATENCY = Histogram(
    "telebridge_turn_latency_seconds",
    "Per answered turn: endpointing, stt, llm_first_token, tts_first_audio, send; total = end of the caller's "
    "speech to the first agent audio heard (phone: playback start per the echoed marks; realtime: first audio sent).",
    ["stage"], buckets=_LATENCY_BUCKETS,
)
BARGE_IN = Histogram(
    "telebridge_barge_in_seconds",
    "Caller speech onset over the agent to the moment the agent's audio is stopped (clear sent).",
    buckets=_BARGE_IN_BUCKETS,
)
INTERRUPTIONS = Counter(
    "telebridge_interruptions", "Caller speech over the agent: confirmed barge-ins, and pauses that resumed.", ["kind"],
)
PROVIDER_ERRORS = Counter(
    "telebridge_provider_errors", "Speech provider failures, by provider and kind.", ["provider", "kind"],
)
FRAME_LAG = Histogram(
    "telebridge_frame_lag_seconds",
    "Caller audio received but not yet through the VAD when a batched VAD pass delivers (sampled per stream): "
    "how far turn-taking trails the caller's live audio.",
    buckets=_LAG_BUCKETS,
)
VAD_BATCH = Histogram(
    "telebridge_vad_batch_size", "Streams (calls) batched into one VAD inference pass.", buckets=_BATCH_BUCKETS,
)
END_OF_TURN_QUESTIONS = Counter(
    "telebridge_end_of_turn_questions",
    "Questions to the end-of-turn model, by what became of them: answered (the model ran), skipped (the caller "
    "went on talking before the model got to it), refused (queue full or the model failed: the transcript rules "
    "decide alone).",
    ["outcome"],
)
END_OF_TURN_CPU = Counter(
    "telebridge_end_of_turn_cpu_seconds",
    "CPU time the end-of-turn model spent (features and inference, in its worker thread).",
)
_EOT = {outcome: END_OF_TURN_QUESTIONS.labels(outcome) for outcome in ("answered", "skipped", "refused")}

for _transport in ("phone", "realtime"):  # every live-call series exists from the start, at 0
    for _direction in ("inbound", "outbound"):
        CALLS_ACTIVE.labels(_transport, _direction)

STAGES = ("endpointing", "stt", "llm_first_token", "tts_first_audio", "send")
_STAGE = {stage: TURN_LATENCY.labels(stage) for stage in (*STAGES, "total")}
_EVENTS = {"interrupt": INTERRUPTIONS.labels("confirmed"), "resume": INTERRUPTIONS.labels("resumed")}
OUTCOMES = frozenset({"end_call", "transfer_call", "silence", "max_duration", "voicemail", "answering_machine",
                      "console_hangup", "console_transfer"})  # the last two: an operator, from /console
_KIND = re.compile(r"[^a-z0-9_]+")


# --- calls (Runtime.register / unregister) ----------------------------------------------------------------------
def _labels(call: Any) -> tuple[str, str]:
    data = getattr(call, "custom_data", None) or {}
    transport = "realtime" if data.get("transport") == "realtime" else "phone"
    direction = "outbound" if str(data.get("Direction") or "").startswith("outbound") else "inbound"
    return transport, direction


def call_started(call: Any) -> tuple[str, str]:
    """A conversation was registered; returns its (transport, direction) for :func:`call_ended`."""
    labels = _labels(call)
    CALLS_ACTIVE.labels(*labels).inc()
    return labels


def call_outcome(call: Any) -> str:
    """``end_call``, ``transfer_call``, ``silence``, ``max_duration``, ``voicemail``, ``answering_machine`` (the
    agent or the turn engine ended it); ``console_hangup``, ``console_transfer`` (an operator, from the console);
    ``hung_up`` (the caller or client did); ``failed`` (the agent never started);
    ``other`` (a reason this list does not know yet: the label set stays bounded)."""
    reason = getattr(call, "ended_reason", None)
    if reason in OUTCOMES:
        return str(reason)
    if reason:
        return "other"
    return "failed" if getattr(call, "engine", None) is None else "hung_up"


def call_ended(labels: tuple[str, str], call: Any) -> None:
    CALLS_ACTIVE.labels(*labels).dec()
    CALLS_TOTAL.labels(*labels, call_outcome(call)).inc()


# --- turns, barge-ins (the conversation loop) ------------------------------------------------------------------
def turn_latency(sink: Any, segment: int, speech_end: float, row: dict[str, float],
                 on_total: Callable[[float], None] | None = None) -> None:
    """One answered turn's latency row (``CallSession._record_latency``), at its first audio *sent*.

    ``total`` waits for the first agent audio *heard*: a sink with a mark ledger (Twilio's) calls back when the
    first mark of ``segment`` echoes as played, with the ``time.perf_counter()`` instant that playback began.
    A sink without one (the realtime API's pacing clock) has no acknowledgement: its first audio sent counts.
    ``on_total`` is also given that total, when it is known (the console's latency rows).
    """
    for stage in STAGES:
        value = row.get(stage)
        if value is not None:
            _STAGE[stage].observe(max(0.0, value))

    def total(seconds: float) -> None:
        _STAGE["total"].observe(seconds)
        if on_total is not None:
            on_total(seconds)

    when_heard = getattr(sink, "when_heard", None)
    if when_heard is None:
        total(max(0.0, row["total"]))
    else:
        when_heard(segment, lambda heard_at: total(max(0.0, heard_at - speech_end)))


def barge_in(now: float, engine: Any) -> None:
    """The agent's audio is being stopped for caller speech: ``now`` is the call-clock time of the newest caller
    audio received (audio arrives in real time), the engine's current utterance start is the caller's onset."""
    if engine is not None and engine.current_utterance is not None:
        BARGE_IN.observe(max(0.0, now - engine.current_start))


def call_event(kind: str) -> None:
    """A conversation event (``CallSession._event``): ``interrupt`` and ``resume`` are counted."""
    child = _EVENTS.get(kind)
    if child is not None:
        child.inc()


def provider_error(provider: str, kind: str) -> None:
    kind = _KIND.sub("_", str(kind).lower())[:32] or "unknown"
    PROVIDER_ERRORS.labels(str(provider)[:48], kind).inc()


# --- the VAD hub ------------------------------------------------------------------------------------------------
def vad_pass(passes: int, streams: int, lags: Callable[[], Iterable[float]]) -> None:
    """One batched VAD pass over ``streams`` streams; every :data:`LAG_SAMPLE_EVERY` passes, each stream's lag."""
    VAD_BATCH.observe(streams)
    if passes % LAG_SAMPLE_EVERY == 0:
        for lag in lags():
            FRAME_LAG.observe(lag)


def end_of_turn_questions(outcome: str, n: int = 1) -> None:
    """``n`` questions to the end-of-turn model ended ``outcome`` (answered, skipped, refused)."""
    _EOT[outcome].inc(n)


def end_of_turn_cpu(seconds: float) -> None:
    END_OF_TURN_CPU.inc(seconds)


# --- exposition -------------------------------------------------------------------------------------------------
def _pid_of(path: str) -> int | None:
    stem = os.path.basename(path)[:-3]  # counter_123.db, gauge_livesum_123.db
    tail = stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkerProcesses:
    """The standard ``process_*`` series of every live worker writing to the multiprocess directory, with a
    ``pid`` label (one process's collector would describe whichever worker answered the scrape)."""

    def __init__(self, path: str, proc: str = "/proc") -> None:
        self.path = path
        self.proc = proc

    def live_pids(self) -> list[int]:
        pids = {pid for f in glob.glob(os.path.join(self.path, "*.db")) if (pid := _pid_of(f)) is not None}
        return sorted(pid for pid in pids if _alive(pid))

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for pid in self.live_pids():
            collector = ProcessCollector(pid=lambda pid=pid: pid, proc=self.proc, registry=None)
            for family in collector.collect():
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from merged.values()


def reap_dead_workers(path: str) -> None:
    """Forget the live-only gauges (``calls_active``) of workers that have exited, crashed ones included."""
    pids = {_pid_of(f) for f in glob.glob(os.path.join(path, "gauge_live*_*.db"))}
    for pid in pids:
        if pid is not None and not _alive(pid):
            mark_process_dead(pid, path)


def render(multiproc_dir: str | None = None) -> bytes:
    """The text exposition: this process's registry, or every worker's with ``PROMETHEUS_MULTIPROC_DIR``."""
    path = multiproc_dir if multiproc_dir is not None else os.environ.get(MULTIPROC_ENV)
    if not path:
        return generate_latest(REGISTRY)
    reap_dead_workers(path)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    registry.register(WorkerProcesses(path))
    PlatformCollector(registry=registry)
    return generate_latest(registry)


async def metrics_endpoint(request: Any) -> Any:
    """``GET /metrics`` (behind the access middleware: a key, or loopback only when none is configured)."""
    from starlette.responses import Response

    body = await asyncio.to_thread(render)  # multiprocess mode reads every worker's files: off the event loop
    return Response(body, media_type=CONTENT_TYPE_LATEST)
