"""A short soak: waves of calls against a real server subprocess leave nothing behind; and the two memory
remedies it relies on (slim finished-call records, freed memory given back after calls).

The rig is ``bench/soak.py``'s: the light Deepgram fakes in their own process (``bench/cloud_fakes.py``),
``python -m telebridge serve`` with ``bench/agents/cloud_talker.py`` (Deepgram live STT and Aura TTS: the agent
talks for the whole call while the caller's line noise streams up), and ``bench/cpu_per_call.py``'s callers in a
process per wave, speaking Twilio's protocol. After each wave every caller hangs up, the server must list no call,
and it is sampled idle (``/proc`` and ``GET /v1/health``'s ``process``). Bounds are on counts after the calls have
ended, never on timings: asyncio tasks and threads back to their level after the first wave (everything created
lazily exists by then), descriptors within a few pooled keep-alive connections of it, RSS within 5 %. The
hour-long version, with the remedies switched off for comparison, is ``bench/soak.py``.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import sys
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WAVES, CALLS, SECONDS = 3, 6, 6.0


def test_a_finished_call_keeps_a_slim_record_not_the_session() -> None:
    """Runtime.finished holds records that do not keep the session (and its audio buffers) alive."""
    from telebridge.pipeline.call_metrics import CallMetrics
    from telebridge.pipeline.finished import FinishedCall

    class Session:  # what a CallSession exposes, plus a big buffer the record must not keep
        def __init__(self) -> None:
            self.call_id, self.custom_data, self.config = "CA1", {"From": "+15550001111"}, None
            self.history = [{"role": "assistant", "content": "Hello."}]
            self.session_data, self.metrics, self.ended_reason = {"k": 1}, CallMetrics(), "hung_up"
            self.speech = SimpleNamespace(fallbacks=[("tts", "deepgram", "down")], stt_cfg="s", tts_cfg="t")
            self.events = SimpleNamespace(fired=["on_agent_started_speaking"])
            self.keypad = SimpleNamespace(sent=["12#"])
            self.audio = bytearray(8_000_000)

    session = Session()
    alive = weakref.ref(session)
    record = FinishedCall.of(session)
    session.history.append({"role": "user", "content": "later"})  # a copy: the record does not change after
    del session
    gc.collect()
    assert alive() is None
    assert (record.call_id, record.history, record.ended_reason) == (
        "CA1", [{"role": "assistant", "content": "Hello."}], "hung_up")
    assert record.speech.fallbacks == [("tts", "deepgram", "down")] and record.speech.tts_cfg == "t"
    assert record.events.fired == ["on_agent_started_speaking"] and record.keypad.sent == ["12#"]
    never_started = SimpleNamespace(call_id="CA2", speech=None, events=None, keypad=None)
    assert FinishedCall.of(never_started).speech is None and FinishedCall.of(never_started).events is None


async def test_freed_memory_is_trimmed_after_calls_end_at_most_once_a_minute(monkeypatch) -> None:
    from telebridge import memory

    trims: list[int] = []
    monkeypatch.setattr(memory, "trim", lambda: trims.append(1) or 0.002)
    monkeypatch.setattr(memory, "COLLECT_DELAY", 0.0)
    now = [1000.0]
    live = [1]
    trimmer = memory.Trimmer(every=60.0, idle_every=5.0, clock=lambda: now[0], live=lambda: live[0])
    collected: list[float] = []
    monkeypatch.setattr(memory.gc, "collect", lambda: collected.append(now[0]) or 0)
    # calls ending at t = 1010, 1065, 1066, 1136, 1141 (the last one of all: idle), 1143 (idle)
    for step, idle in ((10.0, False), (55.0, False), (1.0, False), (70.0, False), (5.0, True), (2.0, True)):
        now[0] += step
        live[0] = 0 if idle else 1
        trimmer.call_ended(idle=idle)
        await asyncio.sleep(0.05)  # the trim runs in a worker thread
    assert len(trims) == 3 and trimmer.trims == 3  # at 1065 (60 s after start), 1136, and 1141 (idle, 5 s on)
    assert collected == [1141.0]  # a full collection only when the last call ended (never with calls live)
    assert trimmer.figures() == {"malloc_trims": 3, "malloc_trim_ms": 2.0, "malloc_trim_ms_max": 2.0,
                                 "idle_gc_collects": 1, "idle_gc_ms_max": trimmer.figures()["idle_gc_ms_max"]}
    assert trimmer._deferred is not None  # 1143 (idle, 2 s after a trim): deferred, so the idle process ends trimmed
    trimmer.idle_every = 0.0
    trimmer._deferred.cancel()
    live[0] = 1  # a call started meanwhile: no idle trim, no collection (the next call ending decides)
    trimmer._idle_again()
    await asyncio.sleep(0.05)
    assert len(trims) == 3 and collected == [1141.0] and trimmer._deferred is None
    live[0] = 0
    trimmer.call_ended(idle=True)
    await asyncio.sleep(0.05)
    assert len(trims) == 4 and collected == [1141.0, 1143.0]
    trimmer.cancel()


def test_trim_gives_freed_heap_back_to_the_os() -> None:
    """The real malloc_trim, on this process: a heap fragmented by freed blocks shrinks (glibc only)."""
    from telebridge import memory

    if memory.trim() is None:
        pytest.skip("no glibc malloc_trim here")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    blocks = [bytearray(100_000) for _ in range(1000)]  # below glibc's mmap threshold: on the heap
    keep = blocks[::50]  # a few survivors pin the heap's top, so free() alone cannot shrink it
    del blocks
    gc.collect()
    before = rss()
    assert memory.trim() is not None
    assert before - rss() > 40_000_000, "malloc_trim gave back less than 40 of ~98 MB freed"
    del keep


def _rig_available() -> None:
    if importlib.util.find_spec("piper") is None:  # the fakes pre-synthesize their speech with Piper
        if os.environ.get("CI") == "true":
            pytest.fail("piper-tts (extra 'local') is needed by the soak's speech fakes")
        pytest.skip("piper-tts (extra 'local') is needed by the soak's speech fakes")


def test_waves_of_calls_leave_no_tasks_threads_fds_or_memory_behind(tmp_path) -> None:
    _rig_available()
    from bench.cpu_per_call import _lingering_calls
    from bench.soak import IDLE_SETTLE, log_problems, run_wave, sample, soak_rig

    samples = []
    with soak_rig(tmp_path, ["on"]) as (server,):
        t0 = time.monotonic()
        for wave in range(1, WAVES + 1):
            refused, done = run_wave([server], CALLS, SECONDS, tmp_path, wave)["on"]
            assert refused == [] and done is not None, refused
            assert done.closed_by_server == 0 and not done.protocol_errors, done
            assert _lingering_calls(server.port, 30) == 0, f"wave {wave}: calls still live after the callers hung up"
            if wave in (1, WAVES):  # idle samples after warm-up and at the end, once freed memory is given back
                time.sleep(IDLE_SETTLE)
                samples.append(sample(server.proc.pid, server.port, wave, wave * CALLS, t0))
    warm, last = samples
    assert 0 < last.tasks <= warm.tasks, (warm, last)  # asyncio tasks: every call's ended with it
    assert last.threads <= warm.threads + 1, (warm, last)  # (an executor thread may still be started lazily)
    assert last.fds <= warm.fds + 4, (warm, last)  # sockets: only pooled keep-alive connections may vary
    assert last.rss_mb <= warm.rss_mb * 1.05, (warm, last)
    assert last.trims > warm.trims >= 1, (warm, last)  # freed memory was given back after the waves
    assert log_problems(server.log) == []  # (a task left pending is also reported here, at shutdown)
