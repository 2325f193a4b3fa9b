"""Embedded Piper TTS: sane audio, process-wide voice cache, and a Piper → Whisper round trip."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
import pytest
from speechutil import fuzzy_ratio, phone_line, resample

from telebridge.inference import InferencePool
from telebridge.providers.stt.whisper import WhisperSTT
from telebridge.providers.tts.base import TTSEngine, TTSError
from telebridge.providers.tts.piper import PiperTTS

SENTENCE = "Your table is booked for seven o'clock."


@pytest.fixture(scope="module")
def tts(pool: InferencePool) -> PiperTTS:
    # noise off: bit-identical output on every run keeps these tests deterministic
    return PiperTTS(pool=pool, noise_scale=0.0, noise_w_scale=0.0)


def test_is_a_tts_engine(tts: PiperTTS) -> None:
    assert isinstance(tts, TTSEngine)
    assert tts.sample_rate == 22050


def test_voice_is_shared_and_single_threaded(pool: InferencePool, tts: PiperTTS) -> None:
    other = PiperTTS(pool=pool, length_scale=1.2)
    assert other.voice is tts.voice
    opts = tts.voice.session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1


async def test_synthesizes_sensible_speech(tts: PiperTTS) -> None:
    audio = await tts.synthesize(SENTENCE)
    assert audio.dtype == np.int16 and audio.ndim == 1
    seconds = len(audio) / tts.sample_rate
    assert 1.0 < seconds < 4.0
    rms = np.sqrt(np.mean(audio.astype(np.float64) ** 2))
    assert rms > 1000  # clearly audible, not silence
    assert np.abs(audio).max() <= int(0.9 * 32767) + 1  # headroom for resampling


async def test_length_scale_slows_speech(pool: InferencePool, tts: PiperTTS) -> None:
    slow = PiperTTS(pool=pool, length_scale=1.5, noise_scale=0.0, noise_w_scale=0.0)
    normal, slower = await asyncio.gather(tts.synthesize(SENTENCE), slow.synthesize(SENTENCE))
    assert len(slower) > 1.3 * len(normal)


async def test_blank_text_gives_empty_audio(tts: PiperTTS) -> None:
    for text in ["", "   ", "\n\t", "..."]:
        out = await tts.synthesize(text)
        assert out.dtype == np.int16 and out.size == 0


async def test_multiple_sentences_concatenate(tts: PiperTTS) -> None:
    a, b, both = await asyncio.gather(
        tts.synthesize("Hello there."),
        tts.synthesize("How are you today?"),
        tts.synthesize("Hello there. How are you today?"),
    )
    # Only the start of a synthesis is trimmed: the second sentence keeps its (short) leading silence.
    assert len(a) + len(b) <= len(both) <= len(a) + len(b) + 0.08 * tts.sample_rate


async def test_the_leading_silence_is_cut_and_the_onset_kept(tts: PiperTTS) -> None:
    from telebridge.providers.tts.piper import LEAD_FLOOR, LEAD_KEEP_S

    for text in ("Yes.", "We're open.", "Sure.", "Hi there!"):  # voiced and fricative onsets
        raw = np.concatenate([c.audio_int16_array for c in tts.voice.synthesize(text, tts._syn_config)])
        audio = await tts.synthesize(text)
        dropped = len(raw) - len(audio)
        np.testing.assert_array_equal(audio, raw[dropped:])
        assert np.abs(raw[:dropped]).max(initial=0) <= LEAD_FLOOR * 32768  # only near-digital silence is dropped
        first_loud = int(np.argmax(np.abs(audio) > LEAD_FLOOR * 32768))
        assert first_loud <= LEAD_KEEP_S * tts.sample_rate
        if text in ("Yes.", "We're open."):  # these start with 40-60 ms of silence
            assert dropped > 0.02 * tts.sample_rate


async def test_concurrent_synthesis_is_consistent(tts: PiperTTS) -> None:
    outs = await asyncio.gather(*(tts.synthesize(SENTENCE) for _ in range(4)))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


async def test_an_idle_pool_speaks_with_two_threads_and_a_busy_one_with_one(pool: InferencePool, tts: PiperTTS) -> None:
    """After warmup an idle pool's chunk goes to the 2-thread session; with other jobs in the pool it keeps to
    one thread. Both say the same thing (same length, nearly the same samples: only the float sums' order
    differs)."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: there is no idle core to lend")
    fast = PiperTTS(pool=pool, noise_scale=0.0, noise_w_scale=0.0)
    await fast.warmup()
    assert fast._idle_voice is not None and fast._idle_voice is not fast.voice
    opts = fast._idle_voice.session.get_session_options()
    assert opts.intra_op_num_threads == 2
    idle = await fast.synthesize(SENTENCE)
    assert fast.idle_syntheses == 1
    outs = await asyncio.gather(*(fast.synthesize(SENTENCE) for _ in range(3)))
    assert fast.idle_syntheses == 2  # the first found the pool idle; the others found it busy
    reference = await tts.synthesize(SENTENCE)
    for audio in (idle, *outs):
        assert len(audio) == len(reference)
        assert np.max(np.abs(audio.astype(np.int32) - reference)) <= 64


def test_worker_processes_share_the_cores_so_none_has_an_idle_session(pool: InferencePool) -> None:
    from telebridge.config import TTS
    from telebridge.providers.context import ProviderContext
    from telebridge.providers.health import ProviderHealth
    from telebridge.providers.tts.piper import create
    from telebridge.settings import Settings

    def engine(workers: int | None) -> PiperTTS:
        return create(TTS.Piper(), ProviderContext(Settings(workers=workers), pool, ProviderHealth())).engine

    assert engine(None).idle_threads == min(2, os.cpu_count() or 1)
    assert engine(1).idle_threads == min(2, os.cpu_count() or 1)
    assert engine(4).idle_threads == 1  # serve --workers 4: the warm-up loads no second session


async def test_a_double_full_stop_does_not_leak_into_the_next_synthesis(tts: PiperTTS) -> None:
    """espeak-ng (one per process) holds a "dot" after a text ending in ".." and starts the next text with it:
    another call's sentence would begin with "dot"."""
    before = await tts.synthesize(SENTENCE)
    slip = await tts.synthesize("We can send the bill to your insurer..")
    after = await tts.synthesize(SENTENCE)
    np.testing.assert_array_equal(after, before)
    assert len(slip) == len(await tts.synthesize("We can send the bill to your insurer."))


def test_missing_model_raises_at_construction(pool: InferencePool, tmp_path: Any) -> None:
    with pytest.raises(TTSError, match="not found"):
        PiperTTS(str(tmp_path / "nope.onnx"), pool=pool)
    model = tmp_path / "voice.onnx"
    model.write_bytes(b"")
    with pytest.raises(TTSError, match="config not found"):
        PiperTTS(str(model), pool=pool)


async def test_round_trip_through_phone_line_to_whisper(pool: InferencePool, tts: PiperTTS) -> None:
    text = "Thank you for calling. How can I help you today?"
    audio = await tts.synthesize(text)
    x = audio.astype(np.float32) / 32768.0
    heard = resample(phone_line(resample(x, tts.sample_rate, 8000)), 8000, 16000)
    result = await WhisperSTT(pool=pool).transcribe(heard)
    assert fuzzy_ratio(result.text, text) >= 0.8, result.text
