import asyncio

import numpy as np
import pytest

from telebridge.providers.tts.cache import CachedTTS


class CountingTTS:
    sample_rate = 22050

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    async def synthesize(self, text: str) -> np.ndarray:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise RuntimeError("provider down")
        return np.full(len(text), 7, dtype=np.int16)


async def test_repeated_phrases_are_synthesized_once_even_concurrently():
    engine = CountingTTS()
    tts = CachedTTS(engine, max_entries=2)
    results = await asyncio.gather(*[tts.synthesize("Hello there.") for _ in range(5)])
    assert engine.calls == 1 and all(np.array_equal(r, results[0]) for r in results)
    await tts.synthesize("Hello   there.")  # whitespace-insensitive
    assert engine.calls == 1
    await tts.synthesize("a")
    await tts.synthesize("b")  # evicts the oldest entry
    await tts.synthesize("Hello there.")
    assert engine.calls == 4


async def test_failures_are_not_cached():
    engine = CountingTTS(fail=True)
    tts = CachedTTS(engine)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await tts.synthesize("Hi.")
    assert engine.calls == 2


async def test_a_cancelled_waiter_does_not_cancel_the_others():
    engine = CountingTTS()
    tts = CachedTTS(engine)
    first = asyncio.ensure_future(tts.synthesize("Shared phrase."))
    second = asyncio.ensure_future(tts.synthesize("Shared phrase."))
    await asyncio.sleep(0)
    first.cancel()
    audio = await second
    assert len(audio) == len("Shared phrase.") and engine.calls == 1
    assert first.cancelled()


async def test_clear_forgets_the_phrases_so_the_next_request_synthesizes_afresh():
    engine = CountingTTS()
    tts = CachedTTS(engine)
    await tts.synthesize("Hello there.")
    await tts.synthesize("Goodbye.")
    assert tts.clear() == 2 and tts.clear() == 0
    await tts.synthesize("Hello there.")
    assert engine.calls == 3
