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


class SineTTS(CountingTTS):
    """A phrase's audio: a 440 Hz tone, one second per 20 characters, int16 at 22.05 kHz as Piper gives it."""

    async def synthesize(self, text: str) -> np.ndarray:
        self.calls += 1
        await asyncio.sleep(0.01)
        t = np.arange(len(text) * self.sample_rate // 20) / self.sample_rate
        return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


async def test_a_phrase_is_resampled_once_per_rate_and_kept(monkeypatch: pytest.MonkeyPatch):
    from telebridge.audio.resample import resample_once
    from telebridge.providers.tts import cache

    resampled: list[tuple[int, int]] = []

    def counting(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
        resampled.append((in_rate, out_rate))
        return resample_once(x, in_rate, out_rate)

    monkeypatch.setattr(cache, "resample_once", counting)
    engine = SineTTS()
    tts = CachedTTS(engine)
    native = await tts.synthesize("Thank you for calling.")
    results = await asyncio.gather(*[tts.synthesize_at("Thank  you for calling.", 8000) for _ in range(5)])
    assert engine.calls == 1 and resampled == [(22050, 8000)]
    phone = results[0]
    assert all(r is phone for r in results) and phone.dtype == np.float32 and not phone.flags.writeable
    assert np.array_equal(phone, resample_once(native, 22050, 8000))
    assert len(phone) == -(-len(native) * 8000 // 22050)
    assert await tts.synthesize_at("Thank you for calling.", 22050) is native  # the engine's own rate: as is
    wide = await tts.synthesize_at("Thank you for calling.", 16000)
    assert len(wide) == -(-len(native) * 16000 // 22050) and resampled == [(22050, 8000), (22050, 16000)]
    assert await tts.synthesize_at("Thank you for calling.", 8000) is phone and engine.calls == 1
    tts.clear()
    again = await tts.synthesize_at("Thank you for calling.", 8000)
    assert engine.calls == 2 and len(resampled) == 3 and np.array_equal(again, phone)


async def test_a_text_too_long_to_keep_is_resampled_each_time():
    engine = SineTTS()
    tts = CachedTTS(engine, max_chars=10)
    first = await tts.synthesize_at("A sentence longer than ten characters.", 8000)
    second = await tts.synthesize_at("A sentence longer than ten characters.", 8000)
    assert engine.calls == 2 and first is not second and np.array_equal(first, second)
    assert first.dtype == np.float32 and len(first) == -(-(38 * 22050 // 20) * 8000 // 22050)


async def test_a_one_shot_session_plays_cached_phrases_at_the_calls_rate():
    from telebridge.providers.tts.base import OneShotSession, open_session

    tts = CachedTTS(SineTTS())
    session = await open_session(tts, call_id="CA1", output_rate=8000)
    assert isinstance(session, OneShotSession) and session.sample_rate == 8000
    chunks = [c async for c in session.stream("Hello there.", reply_id=1)]
    assert len(chunks) == 1 and chunks[0] is await tts.synthesize_at("Hello there.", 8000)
    # At the engine's own rate, or without a rate, or over an engine that cannot: the engine's audio as it is.
    for same in (await open_session(tts, call_id="CA2", output_rate=22050), await open_session(tts, call_id="CA3")):
        assert same.sample_rate == 22050
        assert [c async for c in same.stream("Hello there.", reply_id=1)][0] is await tts.synthesize("Hello there.")
    plain = await open_session(SineTTS(), call_id="CA4", output_rate=8000)
    assert plain.sample_rate == 22050
    assert [c async for c in plain.stream("Hello there.", reply_id=1)][0].dtype == np.int16


async def test_a_realtime_voice_switched_to_plays_cached_phrases_at_the_sessions_rate():
    """A voice a realtime client switches to mid-session (``SessionVoice.prepare``) opens its session at the rate the
    session plays, like the agent's own voice: its cached phrases are not resampled again for every reply."""
    from types import SimpleNamespace

    from telebridge.realtime.voice import SessionVoice

    tts = CachedTTS(SineTTS())

    async def tts_for(cfg):
        return tts

    voice = SessionVoice(SimpleNamespace(tts_for=tts_for), "sess_1")  # type: ignore[arg-type]
    voice.agent_tts = object()  # (the agent is configured)
    await voice.prepare("joe", 24000)
    name, _, session = voice._pending  # type: ignore[misc]
    assert name == "joe" and session.sample_rate == 24000
    chunks = [c async for c in session.stream("Hello there.", reply_id=1)]
    assert chunks[0] is await tts.synthesize_at("Hello there.", 24000)
