"""Short-window Whisper: the pure token logic (synthetic token ids) and the model path on real speech."""

from __future__ import annotations


import numpy as np
import pytest
from speechutil import fuzzy_ratio, normalise_words, synth_phone_16k

from telebridge.inference import InferencePool
from telebridge.providers.stt import whisper_window as window
from telebridge.providers.stt.whisper import WhisperSTT

TS = 50363  # tiny.en's first timestamp token (<|0.00|>)
EOT = 50256


def ts(seconds: float) -> int:
    return TS + round(seconds / window.TIME_PRECISION)


def test_window_is_sized_to_the_turn() -> None:
    assert window.window_seconds(0.4) == window.MIN_WINDOW_SECONDS
    assert window.window_seconds(window.MIN_WINDOW_SECONDS + 2.5) == window.MIN_WINDOW_SECONDS + 4
    assert window.window_seconds(28.9) is None  # no room left for the tail: the usual 30 s decode
    assert window.max_new_tokens(2.0) > window.max_new_tokens(1.0)


def test_segments_about_the_padding_are_dropped() -> None:
    ids = [ts(0.0), 11, 12, ts(1.6), ts(1.7), 13, ts(2.4), ts(3.0), 11, 12, ts(4.6)]
    segments = window.parse_tokens(ids, timestamp_begin=TS, duration=2.5)
    assert [(s.start, s.end, s.tokens) for s in segments] == [(0.0, 1.6, (11, 12)), (1.7, 2.4, (13,))]


def test_an_open_last_segment_and_text_before_any_timestamp_are_kept() -> None:
    assert window.parse_tokens([11, ts(0.8), ts(0.9), 12], timestamp_begin=TS, duration=2.0) == [
        window.Segment(0.0, 0.8, (11,)), window.Segment(0.9, None, (12,))]
    assert window.parse_tokens([ts(0.0), ts(0.5)], timestamp_begin=TS, duration=2.0) == [
        window.Segment(0.0, 0.5, ())]


@pytest.mark.parametrize(("texts", "finished", "duration", "why"), [
    (["What are your opening hours?"], True, 1.6, None),
    (["Hello?", "Hello?"], True, 1.0, "a segment repeats"),
    (["I'd like to book a table", "a table"], True, 3.0, "a segment repeats"),
    (["What are your opening hours?"], False, 1.6, "no end of text"),
    (["one two three four five six seven eight nine ten eleven"], True, 1.0, "too many words"),
    (["415-55125-125-125-125-125-125-125-125-1234"], True, 5.0, "the text repeats itself"),
    (["My number is 415-555-1234, and my name is Jennifer Alvarez."], True, 5.0, None),
])
def test_suspicious_results_are_decoded_again(texts: list[str], finished: bool, duration: float,
                                              why: str | None) -> None:
    segments = [window.Segment(float(i), float(i) + 1, (1,)) for i in range(len(texts))]
    assert window.suspicious(segments, texts, finished=finished, duration=duration) == why


PHRASES = ["What are your opening hours?", "Can I talk to a real person please?", "Yes.",
           "I was wondering if you could move my appointment from Thursday morning to Friday afternoon."]


async def test_short_window_hears_what_the_full_window_hears(pool: InferencePool) -> None:
    short, full = WhisperSTT(pool=pool, short_window=True), WhisperSTT(pool=pool)
    for phrase in PHRASES:
        audio = synth_phone_16k(phrase)
        a, b = await short.transcribe(audio), await full.transcribe(audio)
        assert fuzzy_ratio(a.text, phrase) >= 0.8, (a.text, b.text)
        # to its last word (a token budget read wrongly once cut a 5 s turn off mid-sentence)
        assert normalise_words(phrase)[-1] in normalise_words(a.text), (a.text, b.text)
        assert a.duration == pytest.approx(len(audio) / 16000, abs=0.01)
        assert a.avg_logprob is not None and a.avg_logprob > -1.0 and a.no_speech_prob is not None
    assert (short.short_decodes, short.full_decodes) == (len(PHRASES), 0)
    assert (full.short_decodes, full.full_decodes) == (0, len(PHRASES))


async def test_line_noise_alone_is_not_words(pool: InferencePool) -> None:
    stt = WhisperSTT(pool=pool, short_window=True)
    for seed in range(4):  # seeds 0-3 at -50 dBFS made the model say "you" / "." before the logprob fix
        for level in (0.003, 0.01, 0.02):
            noise = (np.random.default_rng(seed).standard_normal(24000) * level).astype(np.float32)
            assert (await stt.transcribe(noise)).text == "", (seed, level)


async def test_a_turn_too_long_for_a_short_window_uses_the_full_one(pool: InferencePool) -> None:
    stt = WhisperSTT(pool=pool, short_window=True)
    audio = np.concatenate([synth_phone_16k(PHRASES[3])] * 7)  # ~29 s
    assert window.window_seconds(len(audio) / 16000) is None
    result = await stt.transcribe(audio)
    assert "appointment" in result.text.lower() and (stt.short_decodes, stt.full_decodes) == (0, 1)


async def test_a_rejected_short_result_is_decoded_again_in_the_full_window(pool: InferencePool,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    stt = WhisperSTT(pool=pool, short_window=True)
    monkeypatch.setattr(window, "suspicious", lambda *a, **k: "a segment repeats")
    result = await stt.transcribe(synth_phone_16k(PHRASES[0]))
    assert fuzzy_ratio(result.text, PHRASES[0]) >= 0.8 and (stt.short_decodes, stt.full_decodes) == (0, 1)
