"""When the early (speculative) transcript starts: 0.1 s into a pause when the local STT is idle, else 0.2 s."""

from __future__ import annotations

import asyncio
import types

import pytest

from telebridge.inference import InferencePool
from telebridge.pipeline.listening import EARLY_STT_AFTER, EARLY_STT_IDLE_AFTER, Listener
from telebridge.providers.stt.whisper import WhisperSTT


class _Speech:
    def __init__(self, *, idle: bool, streaming: bool = False) -> None:
        self.stt_idle = idle
        self.streaming = streaming


def _listener(speech: _Speech) -> Listener:
    return Listener(call_id="CA1", speech=speech, engine=None, vad_rate=8000, sink_rate=8000,  # type: ignore[arg-type]
                    now=lambda: 0.0, playing=lambda: None, heard=lambda reply: 0, spawn=None,  # type: ignore[arg-type]
                    observe=lambda *a: None, on_interim=lambda u, t: None, on_transcript=lambda u, t: None)


def test_the_thresholds_are_ordered() -> None:
    assert 0 < EARLY_STT_IDLE_AFTER < EARLY_STT_AFTER


@pytest.mark.parametrize(("pause", "idle", "wanted"), [
    (0.05, True, False),  # a gap between words
    (EARLY_STT_IDLE_AFTER, True, True),  # an idle STT starts at once
    (EARLY_STT_IDLE_AFTER, False, False),  # a busy one waits ...
    (EARLY_STT_AFTER - 0.01, False, False),
    (EARLY_STT_AFTER, False, True),  # ... for the usual threshold
])
def test_early_transcript_starts_sooner_when_the_stt_is_idle(pause: float, idle: bool, wanted: bool) -> None:
    assert _listener(_Speech(idle=idle)).wants_early(pause) is wanted


def test_one_early_transcript_per_pause_and_none_with_a_stream() -> None:
    listener = _listener(_Speech(idle=True))
    listener.early = types.SimpleNamespace()  # type: ignore[assignment]  # one under way
    assert not listener.wants_early(1.0)
    assert not _listener(_Speech(idle=True, streaming=True)).wants_early(1.0)


async def test_whisper_is_idle_only_with_nothing_running_or_waiting_on_its_pool() -> None:
    pool = InferencePool("speech-test", max_workers=1, max_pending=4)
    engine = WhisperSTT(pool=pool)
    assert engine.idle()
    started, release = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def job() -> None:
        loop.call_soon_threadsafe(started.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result()

    task = asyncio.create_task(pool.run(job))
    await started.wait()
    assert not engine.idle()
    release.set()
    await task
    assert engine.idle()
    pool.shutdown()
