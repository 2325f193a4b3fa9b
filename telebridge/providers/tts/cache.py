"""A phrase cache in front of any TTS engine.

Phone agents repeat themselves: greetings, "are you still there?", goodbyes, confirmations. Synthesizing those
once per process instead of once per call saves CPU under load and makes the greeting start sooner.

A phrase is also kept at the rate calls play it (:meth:`CachedTTS.synthesize_at`, 8 kHz on the phone): resampled
once per process, not once per call. (Measured: the bench's talker resampled its two-minute monologue from Piper's
22.05 kHz on every call, 1.2-1.8 s of CPU for 25 calls, in the default executor's threads.)
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from ...audio.resample import resample_once

_Store = collections.OrderedDict[Any, np.ndarray]  # phrase (or (rate, phrase)) -> audio, oldest first
_Inflight = dict[Any, "asyncio.Task[np.ndarray]"]
_Make = Callable[[], Awaitable[np.ndarray]]


class CachedTTS:
    def __init__(self, engine: Any, *, max_entries: int = 256, max_chars: int = 300) -> None:
        self.engine = engine
        self.sample_rate: int = engine.sample_rate
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._cache: _Store = collections.OrderedDict()
        self._inflight: _Inflight = {}
        # The same phrases at the rates calls play them, float32, keyed (rate, phrase) (see synthesize_at).
        self._at_rate: _Store = collections.OrderedDict()
        self._inflight_at: _Inflight = {}
        self.hits = 0
        self.misses = 0

    def clear(self) -> int:
        """Forget every cached phrase (syntheses in flight still finish and land); returns how many were held."""
        n = len(self._cache)
        self._cache.clear()
        self._at_rate.clear()
        return n

    async def warmup(self) -> None:
        warm = getattr(self.engine, "warmup", None)
        if warm is not None:
            await warm()

    async def synthesize(self, text: str) -> np.ndarray:
        key = " ".join(text.split())
        if len(key) > self.max_chars:
            return await self.engine.synthesize(text)
        return await self._kept(self._cache, self._inflight, key, lambda: self.engine.synthesize(text))

    async def synthesize_at(self, text: str, rate: int) -> np.ndarray:
        """The phrase's audio at ``rate``: :meth:`synthesize`'s when that is the engine's rate, else float32 in
        [-1, 1] (what :func:`~telebridge.audio.resample.resample_once` makes of it, in a worker thread), kept like
        the phrase itself, so each phrase is resampled once per rate, not once per call. A text too long to cache
        is resampled every time."""
        if rate == self.sample_rate:
            return await self.synthesize(text)
        async def make() -> np.ndarray:
            return await self._resample(await self.synthesize(text), rate)

        key = " ".join(text.split())
        if len(key) > self.max_chars:  # (synthesize() does not keep it either)
            return await make()
        return await self._kept(self._at_rate, self._inflight_at, (rate, key), make)

    async def _kept(self, store: _Store, inflight: _Inflight, slot: Any, make: _Make) -> np.ndarray:
        """``store[slot]``, made by ``make()`` once, however many calls ask for it at the same time."""
        cached = store.get(slot)
        if cached is not None:
            store.move_to_end(slot)
            self.hits += 1
            return cached
        task = inflight.get(slot)
        if task is not None:
            self.hits += 1
        else:
            self.misses += 1
            # The synthesis runs in its own task: one caller hanging up must not cancel it for the others.
            task = asyncio.get_running_loop().create_task(self._make(store, inflight, slot, make),
                                                          name=f"tts-cache:{str(slot)[:24]}")
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # no "never retrieved" noise
            inflight[slot] = task
        return await asyncio.shield(task)

    async def _make(self, store: _Store, inflight: _Inflight, slot: Any, make: _Make) -> np.ndarray:
        try:
            audio = await make()
        finally:
            inflight.pop(slot, None)
        audio.setflags(write=False)
        store[slot] = audio
        if len(store) > self.max_entries:
            store.popitem(last=False)
        return audio

    async def _resample(self, audio: np.ndarray, rate: int) -> np.ndarray:
        if not len(audio):
            return np.zeros(0, np.float32)
        return await asyncio.to_thread(resample_once, audio, self.sample_rate, rate)
