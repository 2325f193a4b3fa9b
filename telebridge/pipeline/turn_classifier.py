"""One end-of-turn classifier per process, shared by every call: questions batched, answered off the event loop.

Calls ask :meth:`TurnClassifier.classify` once per pause candidate (see :mod:`.end_of_turn`). Questions that
arrive while the model is busy wait and go into the next batch, so a burst of pauses across many calls costs one
thread hop per batch, and the worker runs one batch at a time (it never takes more than its one core from the
VAD and the calls). The queue is bounded: past ``max_pending`` waiting questions, new ones are answered ``None``
at once ("no opinion") and the turn engine falls back on its transcript rules, so an overloaded machine answers
as it did before the model, never later. A question whose pause is over by the time its batch is formed (the
caller went on talking, the call ended: its ``stale`` callable says so) is answered ``None`` without running the
model -- its answer would be dropped anyway, and under load those are the questions that queue longest.

Each batch adds to the process's ``telebridge_end_of_turn_questions_total`` (answered, skipped, refused) and
``telebridge_end_of_turn_cpu_seconds_total`` (see :mod:`telebridge.metrics`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from .. import metrics
from .smart_turn import to_model_rate

log = logging.getLogger("telebridge.turn_classifier")

__all__ = ["TurnModel", "TurnClassifier"]


_Question = tuple[np.ndarray, int, "asyncio.Future[float | None]", "Callable[[], bool] | None"]


def _is_stale(stale: Callable[[], bool]) -> bool:
    try:
        return bool(stale())
    except Exception:  # a broken check must not cost the answer
        log.exception("end-of-turn staleness check failed")
        return False


class TurnModel(Protocol):
    def predict(self, batch: list[np.ndarray]) -> list[float]: ...


class TurnClassifier:
    """Batches questions from every call to one model; ``run_blocking`` runs a batch on a worker thread."""

    def __init__(
        self,
        load: Callable[[], TurnModel],
        run_blocking: Callable[..., Any],
        *,
        max_batch: int = 8,
        max_pending: int = 64,
    ) -> None:
        self._load = load
        self._run_blocking = run_blocking
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._model: TurnModel | None = None
        self._queue: list[_Question] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.questions = 0
        self.refused = 0  # answered None: queue full, or the model failed
        self.skipped = 0  # answered None without the model: stale by the time their batch was formed
        self.cpu_seconds = 0.0  # CPU the worker spent answering (features + inference), for the benchmarks

    async def load(self) -> None:
        """Load the model in a worker thread (the first call would otherwise wait for it)."""
        if self._model is None:
            self._model = await self._run_blocking(self._load)

    async def classify(self, audio: np.ndarray, rate: int = 16000, *,
                       stale: Callable[[], bool] | None = None) -> float | None:
        """Probability that the turn ending with ``audio`` (float32 at ``rate``) is complete; ``None`` when there is
        no answer. ``stale()``, if given, is asked when the batch is formed: true means the answer would no longer
        be used, and the model is not run for it."""
        if len(self._queue) >= self.max_pending:
            self.refused += 1
            metrics.end_of_turn_questions("refused")
            return None
        future: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
        self._queue.append((audio, rate, future, stale))
        self.questions += 1
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="turn-classifier")
        try:
            return await future
        except asyncio.CancelledError:
            if not future.done():
                future.cancel()
            raise

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._take_batch()
                if not batch:
                    continue
                try:
                    await self.load()
                    probs = await self._run_blocking(self._predict, [(a, r) for a, r, _ in batch])
                except asyncio.CancelledError:
                    for _, _, f in batch:
                        if not f.done():
                            f.cancel()
                    raise
                except Exception:
                    log.exception("end-of-turn model failed; these turns fall back on the transcript rules")
                    probs = [None] * len(batch)
                    self.refused += len(batch)
                    metrics.end_of_turn_questions("refused", len(batch))
                else:
                    metrics.end_of_turn_questions("answered", len(batch))
                self.batches += 1
                for (_, _, future), p in zip(batch, probs, strict=True):
                    if not future.done():
                        future.set_result(p)

    def _take_batch(self) -> list[tuple[np.ndarray, int, asyncio.Future[float | None]]]:
        """Up to ``max_batch`` waiting questions still worth answering; the stale ones are answered ``None``."""
        batch = []
        while self._queue and len(batch) < self.max_batch:
            audio, rate, future, stale = self._queue.pop(0)
            if future.done():
                continue
            if stale is not None and _is_stale(stale):
                self.skipped += 1
                metrics.end_of_turn_questions("skipped")
                future.set_result(None)
                continue
            batch.append((audio, rate, future))
        return batch

    def _predict(self, batch: list[tuple[np.ndarray, int]]) -> list[float]:
        """In the worker thread: phone audio up to the model's rate, then one inference for the batch."""
        assert self._model is not None
        started = time.thread_time()
        try:
            return self._model.predict([to_model_rate(a, r) for a, r in batch])
        finally:
            spent = time.thread_time() - started
            self.cpu_seconds += spent
            metrics.end_of_turn_cpu(spent)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for _, _, future, _ in self._queue:
            if not future.done():
                future.cancel()
        self._queue.clear()
