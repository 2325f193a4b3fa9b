"""A phrase cache in front of any TTS engine.

Phone agents repeat themselves: greetings, "are you still there?", goodbyes, confirmations. Synthesizing those
once per process instead of once per call saves CPU under load and makes the greeting start sooner.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import numpy as np


class CachedTTS:
    def __init__(self, engine: Any, *, max_entries: int = 256, max_chars: int = 300) -> None:
        self.engine = engine
        self.sample_rate: int = engine.sample_rate
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self._inflight: dict[str, asyncio.Task[np.ndarray]] = {}
        self.hits = 0
        self.misses = 0

    def clear(self) -> int:
        """Forget every cached phrase (syntheses in flight still finish and land); returns how many were held."""
        n = len(self._cache)
        self._cache.clear()
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
