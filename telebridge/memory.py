"""Keeping a long-running server's resident memory flat: fewer glibc arenas, finished calls collected, freed memory
given back.

Why (measured with ``bench/soak.py``, waves of 30 concurrent cloud-speech calls, servers side by side in one run):
with glibc's and Python's defaults the idle RSS after each wave kept climbing, by some 10-30 MB per wave, past the
point where every bounded history was full. Two causes: a finished call's session sits in reference cycles (a
cancelled task's traceback holds the frames that hold it) with its buffers -- a reply's audio alone is ~1 MB per
minute spoken -- until Python's oldest-generation collection, which under steady load comes every few hundred
calls; and what is freed by several threads (the event loop, the VAD, speech and inference workers) stays in
glibc's per-thread arenas, fragmented, rather than going back to the OS. The remedies, on glibc only (elsewhere
the allocator ones do nothing):

* fewer arenas: ``MALLOC_ARENA_MAX=2`` unless the environment says otherwise (set for worker processes before they
  start, and through ``mallopt`` for this one);
* when the last live call ends: a full ``gc.collect()`` on the event loop (nobody is waiting on it then; what
  start-up made is frozen out of its sight, ``Runtime.start``, so it walks only what calls left behind);
* after a call ends, at most every :data:`TRIM_EVERY` seconds (every :data:`IDLE_TRIM_EVERY` seconds when it was
  the last live call), ``malloc_trim(0)`` in a worker thread (never on the event loop): the free memory goes back
  to the OS, so RSS shows what is in use.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("telebridge.memory")

ARENA_ENV = "MALLOC_ARENA_MAX"
DEFAULT_ARENAS = "2"
M_ARENA_MAX = -8  # glibc mallopt parameter
TRIM_EVERY = 60.0  # seconds between two trims at most while calls are live
IDLE_TRIM_EVERY = 5.0  # ... and when the last call has just ended (a trim costs nobody then)
COLLECT_DELAY = 0.5  # seconds from the last call ending to the idle collection (its teardown finishes first)

_libc: Any = None


def _glibc() -> Any:
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else False
        except OSError:
            _libc = False
    return _libc or None


def configure_allocator() -> None:
    """Fewer glibc arenas for this process and the workers it spawns (an explicit ``MALLOC_ARENA_MAX`` wins)."""
    if ARENA_ENV in os.environ:
        return
    os.environ[ARENA_ENV] = DEFAULT_ARENAS  # read by glibc when a spawned worker starts
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, int(DEFAULT_ARENAS))  # this process: applies to arenas not created yet


def trim() -> float | None:
    """Give free heap memory back to the OS; the seconds it took (None where there is no glibc).

    ``malloc_trim`` locks each arena in turn while it walks it: a thread allocating meanwhile waits for it, which
    is why it runs at most every :data:`TRIM_EVERY` seconds while calls are live, and why its duration is kept.
    """
    libc = _glibc()
    if libc is None:
        return None
    t0 = time.perf_counter()
    libc.malloc_trim(0)
    return time.perf_counter() - t0


class Trimmer:
    """Calls :func:`trim` in a worker thread after calls end, at most every ``every`` seconds (``idle_every`` when
    no call is left)."""

    def __init__(self, every: float = TRIM_EVERY, idle_every: float = IDLE_TRIM_EVERY,
                 clock: Any = time.monotonic, live: Callable[[], int] = lambda: 0) -> None:
        self.every = every
        self.idle_every = idle_every
        self.clock = clock
        self.live = live  # how many calls are live now (the runtime's count)
        self.collects = 0  # full garbage collections run when the process went idle
        self.collect_max_seconds = 0.0
        self._last = clock()
        self._task: asyncio.Future[float | None] | None = None
        self._deferred: asyncio.TimerHandle | None = None
        self._collecting: asyncio.TimerHandle | None = None
        self.trims = 0
        self.last_seconds = 0.0  # how long the latest trim took
        self.max_seconds = 0.0  # ... and the longest one

    def call_ended(self, *, idle: bool = False) -> None:
        """A call ended; ``idle``: it was the last live one (then a trim too recent to repeat is deferred, so the
        idle process always ends up trimmed)."""
        now = self.clock()
        wait = self.idle_every if idle else self.every
        if now - self._last < wait or (self._task is not None and not self._task.done()):
            if idle and self._deferred is None:
                try:
                    delay = max(0.0, self._last + self.idle_every - now) + 0.1
                    self._deferred = asyncio.get_running_loop().call_later(delay, self._idle_again)
                except RuntimeError:
                    pass
            return
        self._start(now, idle=idle)

    def _idle_again(self) -> None:
        self._deferred = None
        self.call_ended(idle=self.live() == 0)

    def _start(self, now: float, *, idle: bool = False) -> None:
        self._last = now
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (tests driving the runtime by hand)
            return
        if idle:  # after the ended call's own teardown (its last log lines, its registry update)
            self._collecting = loop.call_later(COLLECT_DELAY, self._collect_and_trim)
            return
        self._run_trim(loop)

    def _collect_and_trim(self) -> None:
        self._collecting = None
        if self.live() == 0:  # (a call may have started meanwhile: then no collection)
            self._collect()
        self._run_trim(asyncio.get_running_loop())

    def _run_trim(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.run_in_executor(None, trim)
        self._task.add_done_callback(self._done)

    def _collect(self) -> None:
        """A full garbage collection, on the event loop, only while no call is live (it holds the loop for tens of
        milliseconds). A finished call's session sits in reference cycles (a cancelled task's traceback holds the
        frames that hold the session) with its buffers -- a reply's audio alone is ~1 MB per minute spoken -- and
        only the oldest generation's collection frees them, which under steady load comes every few hundred calls:
        the process's RSS saws up and down by that much. Collected when the process goes idle, the memory is
        freed and, by the trim that follows, given back."""
        t0 = time.perf_counter()
        gc.collect()
        self.collects += 1
        self.collect_max_seconds = max(self.collect_max_seconds, time.perf_counter() - t0)

    def cancel(self) -> None:
        """A deferred trim or collection is dropped (the runtime stops)."""
        for handle in (self._deferred, self._collecting):
            if handle is not None:
                handle.cancel()
        self._deferred = self._collecting = None

    def _done(self, task: asyncio.Future[float | None]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            log.debug("malloc_trim failed: %r", task.exception())
            return
        seconds = task.result()
        if seconds is not None:
            self.trims += 1
            self.last_seconds = seconds
            self.max_seconds = max(self.max_seconds, seconds)

    def figures(self) -> dict[str, Any]:
        """For ``/v1/health``'s ``process``: trims done, and the latest and longest one in milliseconds."""
        return {"malloc_trims": self.trims, "malloc_trim_ms": round(1000 * self.last_seconds, 2),
                "malloc_trim_ms_max": round(1000 * self.max_seconds, 2), "idle_gc_collects": self.collects,
                "idle_gc_ms_max": round(1000 * self.collect_max_seconds, 2)}
