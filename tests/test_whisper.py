"""Embedded Whisper STT on real (Piper-synthesized) speech through a μ-law phone leg."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from speechutil import fuzzy_ratio, phone_line, resample, synth, synth_phone_16k

from telebridge.inference import InferencePool
from telebridge.pipeline.segmenter import SegmenterParams, SpeechEnded, VadSegmenter
from telebridge.pipeline.vad import VadHub, shared_silero
from telebridge.providers.stt.base import STTEngine, STTError, Transcript
from telebridge.providers.stt.whisper import WhisperSTT

SENTENCE = "I would like to book a table for two people at seven tonight."


@pytest.fixture(scope="module")
def stt(pool: InferencePool) -> WhisperSTT:
    return WhisperSTT(pool=pool)


def test_is_an_stt_engine(stt: WhisperSTT) -> None:
    assert isinstance(stt, STTEngine)


async def test_transcribes_phone_quality_speech(stt: WhisperSTT) -> None:
    await stt.warmup()
    audio = synth_phone_16k(SENTENCE)
    result = await stt.transcribe(audio)
    assert isinstance(result, Transcript)
    assert fuzzy_ratio(result.text, SENTENCE) >= 0.8, result.text
    assert result.language == "en"
    assert result.duration == pytest.approx(len(audio) / 16000, abs=0.01)
    assert result.avg_logprob is not None and result.avg_logprob > -1.0


async def test_silence_and_line_noise_give_empty_text(stt: WhisperSTT) -> None:
    silence = await stt.transcribe(np.zeros(32000, np.float32))
    assert silence.text == "" and silence.is_empty and silence.duration == 2.0
    # quiet hiss above the energy gate goes through the model and is rejected there
    rng = np.random.default_rng(7)
    hiss8k = phone_line((rng.standard_normal(16000) * 0.004).astype(np.float32))
    noise = await stt.transcribe(resample(hiss8k, 8000, 16000))
    assert noise.text == "", noise


async def test_ten_concurrent_calls_share_one_model(pool: InferencePool, stt: WhisperSTT) -> None:
    texts = [
        "Please cancel my appointment on Friday.",
        "What time does the store open tomorrow?",
    ]
    engines = [WhisperSTT(pool=pool) for _ in range(10)]
    assert all(e.model is stt.model for e in engines)
    before = pool.stats().completed
    audios = [synth_phone_16k(texts[i % 2]) for i in range(10)]
    results = await asyncio.gather(*(e.transcribe(a) for e, a in zip(engines, audios)))
    for i, r in enumerate(results):
        assert fuzzy_ratio(r.text, texts[i % 2]) >= 0.8, r.text
    assert pool.stats().completed - before == 10


async def test_bad_input_raises_stt_error(stt: WhisperSTT) -> None:
    with pytest.raises(STTError):
        await stt.transcribe(np.zeros(16000, np.int16))
    with pytest.raises(STTError):
        await stt.transcribe(np.zeros((2, 16000), np.float32))
    with pytest.raises(STTError):
        await stt.transcribe(np.full(16000, np.nan, np.float32))
    empty = await stt.transcribe(np.zeros(0, np.float32))
    assert empty.text == ""


def test_missing_model_dir_raises(pool: InferencePool, tmp_path: Any) -> None:
    with pytest.raises(STTError, match="model.bin"):
        WhisperSTT(str(tmp_path), pool=pool)


async def test_engine_failure_is_wrapped(pool: InferencePool, stt: WhisperSTT) -> None:
    class Broken:  # fails whichever way it is used (short window or full)
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("ctranslate2 exploded")

    broken = WhisperSTT(pool=pool)
    broken.model = Broken()
    with pytest.raises(STTError, match="exploded"):
        await broken.transcribe(synth_phone_16k(SENTENCE))


async def test_vad_segments_transcribe(pool: InferencePool, stt: WhisperSTT) -> None:
    """Phone audio → batched VAD → segmenter → Whisper: each utterance comes out whole."""
    sentences = ["Good morning, I need a taxi to the airport.", "Yes, for three passengers please."]
    rate = 8000
    gap = np.zeros(int(1.0 * rate), np.float32)
    signal = phone_line(np.concatenate([gap, synth(sentences[0], rate), gap, synth(sentences[1], rate), gap]))
    vad_pool = InferencePool("vad", 1, 4)
    hub = VadHub(shared_silero(), vad_pool)
    seg = VadSegmenter(SegmenterParams(sample_rate=rate))
    ended: list[SpeechEnded] = []

    def on_window(p: float, w: np.ndarray, t: float) -> None:
        ended.extend(e for e in seg.push(p, w, t) if isinstance(e, SpeechEnded))

    stream = hub.open(rate, on_window)
    for i in range(0, len(signal), 160):
        stream.feed(signal[i : i + 160])
        if i % 3200 == 0:  # as the hub's run() loop would, every few ticks
            await hub.flush_now()
    await hub.flush_now()
    vad_pool.shutdown()
    assert len(ended) == 2
    results = await asyncio.gather(*(stt.transcribe(resample(e.audio, rate, 16000)) for e in ended))
    for r, s in zip(results, sentences):
        assert fuzzy_ratio(r.text, s) >= 0.8, r.text
