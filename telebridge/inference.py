"""Bounded worker pools for the embedded speech engines.

Why thread pools: ONNX Runtime (Silero VAD, Piper) and CTranslate2 (Whisper) release
the GIL while they compute, so a couple of Python threads give real parallelism on a
small box without the memory cost of one model copy per process.

Why *bounded*: with 10-50 calls in one process, an unbounded executor queue turns a
load spike into seconds of hidden latency and unbounded memory.  Each pool admits at
most ``max_workers + max_pending`` jobs into its executor; further callers wait
*asynchronously* (the event loop is never blocked) in FIFO order.

Why separate pools: the app runs a 1-thread ``"vad"`` pool for the latency-critical
~100 µs Silero batches and a ``"speech"`` pool for Whisper + Piper, so a 300 ms
transcription can never delay voice-activity detection for every call.

Admission is implemented with a tiny hand-rolled FIFO (not ``asyncio.Semaphore``) so
that a slot is released exactly when the executor job really finishes -- even if the
awaiting coroutine was cancelled while the job kept running on its thread -- and so a
pool is not bound to the first event loop that happened to contend on it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

__all__ = ["InferencePool", "PoolClosedError", "PoolStats"]

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")


class PoolClosedError(RuntimeError):
    """Raised by :meth:`InferencePool.run` once the pool has been shut down."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool's load, for health endpoints, logs and benchmarks."""

    name: str
    max_workers: int
    max_pending: int
    running: int  # jobs executing on a worker thread right now
    waiting: int  # admitted-but-not-started jobs plus callers waiting for admission
    completed: int  # jobs that finished (successfully or not) since start
    failed: int  # of which raised an exception


class InferencePool:
    """A named thread pool that bounds both concurrency and queue depth.

    ``run`` must be awaited from an event loop; the callable runs on a worker thread.
    """

    def __init__(self, name: str, max_workers: int, max_pending: int) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        if max_pending < 0:
            raise ValueError("max_pending must be >= 0")
        self.name = name
        self.max_workers = max_workers
        self.max_pending = max_pending
        self._capacity = max_workers + max_pending
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=f"infer-{name}"
        )
        # Admission state: only touched from event-loop threads (see _on_job_done).
        self._admitted = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # Execution counters: touched from worker threads, hence the lock.
        self._counter_lock = threading.Lock()
        self._running = 0
        self._completed = 0
        self._failed = 0
        self._closed = False

    # ------------------------------------------------------------------ public API
    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on a worker thread and return its result.

        Waits (asynchronously) for admission when the pool is saturated.  If the caller
        is cancelled before the job starts, the job is withdrawn; if it is cancelled
        while the job runs, the job completes in the background and its slot is freed
        when it finishes.  Exceptions raised by ``fn`` propagate unchanged.
        """
        if self._closed:
            raise PoolClosedError(f"inference pool {self.name!r} is shut down")
        await self._acquire()
        loop = asyncio.get_running_loop()
        try:
            cfut = self._executor.submit(self._call, fn, args, kwargs)
        except RuntimeError as exc:  # executor shut down between the check and submit
            self._release()
            raise PoolClosedError(f"inference pool {self.name!r} is shut down") from exc
        cfut.add_done_callback(lambda _f: self._job_done_threadsafe(loop))
        # wrap_future propagates cancellation of the awaiting task to ``cfut``; a job
        # that has not started yet is then dropped from the executor queue.
        return await asyncio.wrap_future(cfut, loop=loop)

    def stats(self) -> PoolStats:
        """Current load.  Cheap; safe to call from the event loop at any rate."""
        with self._counter_lock:
            running, completed, failed = self._running, self._completed, self._failed
        live_waiters = sum(1 for w in self._waiters if not w.done())
        return PoolStats(
            name=self.name,
            max_workers=self.max_workers,
            max_pending=self.max_pending,
            running=running,
            waiting=max(self._admitted - running, 0) + live_waiters,
            completed=completed,
            failed=failed,
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def shutdown(self, wait: bool = False) -> None:
        """Stop accepting work, drop queued jobs and fail callers awaiting admission.

        ``wait=True`` blocks until running jobs finish; from an event loop prefer the
        default and let in-flight jobs end on their own.
        """
        if self._closed:
            return
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosedError(f"inference pool {self.name!r} is shut down"))
        self._executor.shutdown(wait=wait, cancel_futures=True)

    # ------------------------------------------------------------------ internals
    def _call(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        with self._counter_lock:
            self._running += 1
        ok = False
        try:
            result = fn(*args, **kwargs)
            ok = True
            return result
        finally:
            with self._counter_lock:
                self._running -= 1
                self._completed += 1
                if not ok:
                    self._failed += 1

    async def _acquire(self) -> None:
        if self._admitted < self._capacity and not self._waiters:
            self._admitted += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # A slot was handed to us just as we were cancelled: pass it on.
                self._release()
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            raise
        if self._closed:
            self._release()
            raise PoolClosedError(f"inference pool {self.name!r} is shut down")

    def _release(self) -> None:
        # Hand the slot directly to the oldest live waiter (FIFO, no thundering herd).
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._admitted -= 1

    def _job_done_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        """Free the job's slot on the loop that admitted it (called from any thread)."""
        try:
            loop.call_soon_threadsafe(self._release)
        except RuntimeError:
            # The loop is closed: nobody can be waiting on it any more.
            self._admitted -= 1
