"""Voice activity detection: one Silero model, batched across every call in the process.

Two layers, each testable on its own:

* :class:`~.silero.SileroModel` -- the Silero VAD ONNX graph (:mod:`.silero`).
* :class:`VadHub` -- ONE per process.  Calls ``feed`` audio into cheap per-call
  buffers (:class:`VadStream`) from their receive loops; a single background task wakes every ``tick``
  (32 ms = one window), stacks every stream that has a complete window into one batch
  per sample rate and runs it with a single executor hop.  With 50 calls that is one
  ONNX run per tick instead of 50, which is what makes VAD cost nearly flat in the
  number of calls (see ``bench/bench_vad.py``).

Each stream hands its per-window speech probabilities to an ``on_window`` callback; turning them into
utterances is :mod:`telebridge.pipeline.segmenter`'s job.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from telebridge import metrics
from telebridge.inference import InferencePool, PoolClosedError

from .silero import STATE_SIZE, SileroModel, check_rate, default_silero_path, shared_silero

__all__ = [
    "SileroModel",
    "default_silero_path",
    "shared_silero",
    "VadHub",
    "VadStream",
    "OnWindow",
]

_LOGGER = logging.getLogger(__name__)

_F32 = np.dtype(np.float32)

OnWindow = Callable[[float, np.ndarray, float], None]
"""``on_window(prob, window, end_time_s)``, invoked on the event loop, in time order."""


class VadStream:
    """One call's view of the hub.  ``feed`` only appends to a buffer: no awaits."""

    def __init__(
        self, hub: VadHub, sample_rate: int, on_window: OnWindow, max_backlog_s: float
    ) -> None:
        self.sample_rate = sample_rate
        self.window = SileroModel.window(sample_rate)
        self._ctx_size = SileroModel.context_size(sample_rate)
        self._hub = hub
        self._on_window = on_window
        self._chunks: list[np.ndarray] = []
        self._buffered = 0
        self._max_backlog = max(int(max_backlog_s * sample_rate), self.window)
        self._grace = 0  # extra backlog accepted once (audio held while the call was set up), until worked off
        self._state = np.zeros((2, STATE_SIZE), dtype=np.float32)
        self._context = np.zeros(self._ctx_size, dtype=np.float32)
        self._taken = 0  # samples handed to the model (or dropped), i.e. stream time
        self.dropped_samples = 0
        self.closed = False
        # The call's audio held before this stream (a phone call's frames until the pass, see
        # intake.CallerAudio.on_ulaw): ``before_take()`` feeds it at the start of each pass, ``held()`` says how many
        # seconds wait there (they count in :attr:`lag`).
        self.before_take: Callable[[], None] | None = None
        self.held: Callable[[], float] | None = None
        # ``rests()`` true: nothing on this stream needs its verdicts within a tick (nobody speaks, nothing is due):
        # its audio may wait for every :attr:`VadHub.rest_every`-th pass (see :meth:`VadHub.run`).
        self.rests: Callable[[], bool] | None = None

    @property
    def pending_windows(self) -> int:
        return self._buffered // self.window

    @property
    def lag(self) -> float:
        """Seconds of audio fed but not yet taken for inference: right after a pass delivers, how far the VAD's
        verdicts trail the newest audio (real time, as calls feed audio as it arrives)."""
        lag = self._buffered / self.sample_rate
        return lag + self.held() if self.held is not None else lag

    @property
    def time(self) -> float:
        """Stream time (s) of the end of the last window taken for inference."""
        return self._taken / self.sample_rate

    def feed(self, samples: np.ndarray) -> None:
        """Queue float32 mono samples in [-1, 1] at ``sample_rate``.  Ignored once closed."""
        if self.closed:
            return
        if type(samples) is np.ndarray and samples.dtype == _F32 and samples.ndim == 1:  # (a call's frame)
            x = samples.copy()
        else:
            x = np.asarray(samples)
            if x.dtype.kind not in "f":
                raise TypeError(f"VadStream.feed expects float samples in [-1, 1], got {x.dtype}")
            x = np.array(x, dtype=np.float32, copy=True).reshape(-1)
        if x.size == 0:
            return
        self._chunks.append(x)
        self._buffered += x.size
        if self._buffered > self._max_backlog + self._grace:
            self._drop_backlog()

    def accept_backlog(self, seconds: float) -> None:
        """Audio held back while the call was set up is about to be fed at once: keep all of it, however long the
        set-up took (the cap applies again once the hub has worked through it), so a caller's first words are
        never dropped for a slow start."""
        self._grace += int(seconds * self.sample_rate)

    def close(self) -> None:
        """Stop processing this stream; pending or in-flight windows are discarded."""
        if not self.closed:
            self.closed = True
            self._chunks.clear()
            self._buffered = 0
            self._hub._detach(self)

    # -- hub side ------------------------------------------------------------------
    def _drop_backlog(self) -> None:
        """Keep the newest audio if the hub fell far behind (or was never started).

        Stream time still advances over the dropped audio so event times stay aligned
        with the call's clock; the recurrent state is reset because it no longer
        describes the audio that follows.
        """
        data = np.concatenate(self._chunks)
        # Drop down to half the cap (whole windows) so a stalled hub costs one
        # concatenate per half-backlog of audio, not one per 20 ms frame.
        keep = self._max_backlog // 2
        keep = max(keep - keep % self.window, self.window)
        drop = data.size - keep
        self._chunks = [data[drop:]]
        self._buffered = keep
        self._taken += drop
        self._state[:] = 0.0
        self._context[:] = 0.0
        level = logging.WARNING if self.dropped_samples == 0 else logging.DEBUG
        self.dropped_samples += drop
        _LOGGER.log(level, "VAD stream fell behind: dropped %.2f s of audio", drop / self.sample_rate)

    def _take(self, max_windows: int) -> tuple[np.ndarray, float] | None:
        """Remove up to ``max_windows`` complete windows: ``([k, win], start_time)``."""
        k = min(self._buffered // self.window, max_windows)
        if k == 0:
            return None
        data = self._chunks[0] if len(self._chunks) == 1 else np.concatenate(self._chunks)
        n = k * self.window
        rest = data[n:]
        self._chunks = [rest] if rest.size else []
        self._buffered = rest.size
        if self._buffered <= self._max_backlog:
            self._grace = 0
        start = self._taken
        self._taken += n
        return data[:n].reshape(k, self.window), start / self.sample_rate


@dataclass(slots=True)
class _Job:
    """One stream's share of a batched pass."""

    stream: VadStream
    windows: np.ndarray  # [k, win]
    start_time: float
    context: np.ndarray  # [ctx] in, updated by the worker
    state: np.ndarray  # [2, 128] in, updated by the worker
    probs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def _infer_batched(model: SileroModel, groups: dict[int, list[_Job]]) -> None:
    """Worker-thread body: run every job's windows, batching streams per sample rate.

    A stream with k pending windows takes part in rounds 0..k-1; rounds are sequential
    because each needs the previous state.  Jobs are sorted by k (descending) so that
    round r's batch is a prefix of the arrays and no gather/scatter is needed.
    """
    for rate, jobs in groups.items():
        jobs.sort(key=lambda j: -j.windows.shape[0])
        win = SileroModel.window(rate)
        ctx = SileroModel.context_size(rate)
        b = len(jobs)
        rounds = jobs[0].windows.shape[0]
        counts = np.array([j.windows.shape[0] for j in jobs])
        state = np.stack([j.state for j in jobs], axis=1)  # [2, B, 128]
        x = np.empty((b, ctx + win), dtype=np.float32)
        x[:, :ctx] = np.stack([j.context for j in jobs])
        if rounds == 1:
            windows = np.stack([j.windows[0] for j in jobs])[:, None, :]
        else:
            windows = np.zeros((b, rounds, win), dtype=np.float32)
            for i, job in enumerate(jobs):
                windows[i, : job.windows.shape[0]] = job.windows
        probs = np.zeros((b, rounds), dtype=np.float32)
        for r in range(rounds):
            m = int(np.count_nonzero(counts > r))
            if r > 0:
                x[:m, :ctx] = x[:m, -ctx:]  # previous window's tail becomes the context
            x[:m, ctx:] = windows[:m, r]
            p, new_state = model.infer(x[:m], state[:, :m], rate)
            state[:, :m] = new_state
            probs[:m, r] = p
        for i, job in enumerate(jobs):
            k = job.windows.shape[0]
            job.probs = probs[i, :k].copy()
            job.state = state[:, i].copy()
            job.context = job.windows[k - 1, -ctx:].copy()


class VadHub:
    """Process-wide batched VAD.  Create one, start ``run()`` once, ``open`` per call."""

    def __init__(
        self,
        model: SileroModel,
        pool: InferencePool,
        *,
        tick: float = 0.032,
        rest_every: int = 1,
        max_rounds_per_pass: int = 32,
        max_backlog_s: float = 5.0,
    ) -> None:
        if rest_every < 1:
            raise ValueError(f"rest_every must be at least 1, not {rest_every}")
        self.model = model
        self.pool = pool
        self.tick = tick
        self.rest_every = rest_every  # 1: no stream rests (the service sets TELEBRIDGE_VAD_REST_TICKS)
        self._ticks = 0  # passes run by run() (resting streams take part in every rest_every-th)
        self.max_rounds_per_pass = max_rounds_per_pass
        self.max_backlog_s = max_backlog_s
        self._streams: dict[int, VadStream] = {}
        self._lock: asyncio.Lock | None = None
        self.passes = 0  # executor hops performed
        self.windows_processed = 0
        self.last_batch_streams = 0

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def open(self, sample_rate: int, on_window: OnWindow) -> VadStream:
        check_rate(sample_rate)
        stream = VadStream(self, sample_rate, on_window, self.max_backlog_s)
        self._streams[id(stream)] = stream
        return stream

    def _detach(self, stream: VadStream) -> None:
        self._streams.pop(id(stream), None)

    async def run(self) -> None:
        """Background loop: one batched pass per tick until cancelled.

        A stream at rest (:attr:`VadStream.rests`: nobody on its call speaks and nothing is due, so no verdict is
        awaited) takes part in every :attr:`rest_every`-th pass only, its windows ``rest_every`` at a time: the same
        windows, results and order, up to ``(rest_every - 1) * tick`` later. A pass with no stream to take does not
        wake the inference thread: while every call rests, the thread runs every ``rest_every``-th tick, and the
        later rounds of a pass run warm (on this machine one Silero run costs 1.4-1.6x as much 32 ms after the last
        as right after it), and each stream's per-pass work (held frames decoded and cancelled, windows taken,
        results delivered) is done ``rest_every`` times less often. A stream stops resting as soon as its call says
        so, at the next tick."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except PoolClosedError:
                _LOGGER.info("VAD hub stopping: its inference pool was shut down")
                return
            except Exception:  # never let one bad pass kill VAD for every call
                _LOGGER.exception("VAD pass failed")
            next_at += self.tick
            now = loop.time()
            if next_at < now:  # fell behind (pool busy / big backlog): don't burst
                next_at = now
            await asyncio.sleep(next_at - now)

    async def _tick(self) -> int:
        """The pass of one tick of :meth:`run`: every stream, or (between every ``rest_every``-th) all but those at
        rest. Returns the windows processed."""
        rest = self._ticks % self.rest_every != 0
        self._ticks += 1
        return await self._pass(rest=rest)

    async def flush_now(self) -> int:
        """Process every complete window currently buffered; returns windows processed.

        For deterministic tests and for draining at shutdown.
        """
        total = 0
        while True:
            n = await self._pass()
            total += n
            if n == 0 or not any(s.pending_windows for s in self._streams.values()):
                return total

    async def _pass(self, *, rest: bool = False) -> int:
        """One batched pass over every stream with a complete window; ``rest``: but the streams at rest."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            groups: dict[int, list[_Job]] = {}
            for stream in list(self._streams.values()):
                if rest and stream.rests is not None and _resting(stream):
                    continue
                if stream.before_take is not None:
                    try:
                        stream.before_take()
                    except Exception:
                        _LOGGER.exception("VAD stream's held audio could not be fed (stream continues)")
                taken = stream._take(self.max_rounds_per_pass)
                if taken is None:
                    continue
                windows, start = taken
                groups.setdefault(stream.sample_rate, []).append(
                    _Job(stream, windows, start, stream._context.copy(), stream._state.copy())
                )
            if not groups:
                return 0
            jobs = [job for js in groups.values() for job in js]
            self.passes += 1
            self.last_batch_streams = len(jobs)
            await self.pool.run(_infer_batched, self.model, groups)
            for job in jobs:
                self._deliver(job)
            metrics.vad_pass(self.passes, len(jobs), lambda: (j.stream.lag for j in jobs if not j.stream.closed))
            n = sum(int(job.windows.shape[0]) for job in jobs)
            self.windows_processed += n
            return n

    def _deliver(self, job: _Job) -> None:
        stream = job.stream
        if stream.closed:  # closed while its batch was in flight: results are moot
            return
        stream._state = job.state
        stream._context = job.context
        rate = stream.sample_rate
        probs = job.probs.tolist()  # (Python floats, as float() of each)
        for r in range(len(probs)):
            if stream.closed:  # a callback may close its own stream
                return
            end_time = job.start_time + (r + 1) * stream.window / rate
            try:
                stream._on_window(probs[r], job.windows[r], end_time)
            except Exception:
                _LOGGER.exception("VAD on_window callback raised (stream continues)")


def _resting(stream: VadStream) -> bool:
    try:
        return bool(stream.rests())  # type: ignore[misc]  # (checked by the caller)
    except Exception:
        _LOGGER.exception("VAD stream's rest check failed (taken as not resting)")
        return False


def iter_windows(x: np.ndarray, window: int) -> Iterator[np.ndarray]:
    """Split a signal into complete windows (helper for offline use and tests)."""
    for i in range(0, x.shape[0] - window + 1, window):
        yield x[i : i + window]

