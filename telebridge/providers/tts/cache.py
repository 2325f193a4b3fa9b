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
from typing import Any

import numpy as np

from ...audio.resample import resample_once


class CachedTTS:
    def __init__(self, engine: Any, *, max_entries: int = 256, max_chars: int = 300) -> None:
        self.engine = engine
        self.sample_rate: int = engine.sample_rate
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._inflight: dict[str, asyncio.Task[np.ndarray]] = {}
        # The same phrases at the rates calls play them, float32 (see synthesize_at).
        self._at_rate: collections.OrderedDict[tuple[int, str], np.ndarray] = collections.OrderedDict()
        self._inflight_at: dict[tuple[int, str], asyncio.Task[np.ndarray]] = {}
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
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.hits += 1
            return cached
        task = self._inflight.get(key)
        if task is not None:
            self.hits += 1
        else:
            self.misses += 1
            # The synthesis runs in its own task: one caller hanging up must not cancel it for the others.
            task = asyncio.get_running_loop().create_task(self._synthesize(key, text), name=f"tts-cache:{key[:24]}")
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # no "never retrieved" noise
            self._inflight[key] = task
        return await asyncio.shield(task)

    async def synthesize_at(self, text: str, rate: int) -> np.ndarray:
        """The phrase's audio at ``rate``: :meth:`synthesize`'s when that is the engine's rate, else float32 in
        [-1, 1] (what :func:`~telebridge.audio.resample.resample_once` makes of it, in a worker thread), kept like
        the phrase itself, so each phrase is resampled once per rate, not once per call. A text too long to cache
        is resampled every time."""
        if rate == self.sample_rate:
            return await self.synthesize(text)
        key = " ".join(text.split())
        if len(key) > self.max_chars:
            return await self._resample(await self.engine.synthesize(text), rate)
        slot = (rate, key)
        cached = self._at_rate.get(slot)
        if cached is not None:
            self._at_rate.move_to_end(slot)
            self.hits += 1
            return cached
        task = self._inflight_at.get(slot)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._synthesize_at(slot, text), name=f"tts-cache@{rate}")
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._inflight_at[slot] = task
        return await asyncio.shield(task)

    async def _synthesize_at(self, slot: tuple[int, str], text: str) -> np.ndarray:
        try:
            audio = await self._resample(await self.synthesize(text), slot[0])
        finally:
            self._inflight_at.pop(slot, None)
        audio.setflags(write=False)
        self._at_rate[slot] = audio
        if len(self._at_rate) > self.max_entries:
            self._at_rate.popitem(last=False)
        return audio

    async def _resample(self, audio: np.ndarray, rate: int) -> np.ndarray:
        if not len(audio):
            return np.zeros(0, np.float32)
        return await asyncio.to_thread(resample_once, audio, self.sample_rate, rate)

    async def _synthesize(self, key: str, text: str) -> np.ndarray:
        try:
            audio = await self.engine.synthesize(text)
        finally:
            self._inflight.pop(key, None)
        audio.setflags(write=False)
        self._cache[key] = audio
        if len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return audio
