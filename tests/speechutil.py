"""Shared helpers for tests that need real speech: deterministic Piper audio and fuzzy matching.

``synth`` uses the bundled Piper voice with noise disabled, so the same text always
gives bit-identical audio and tests stay deterministic.  Results are cached per process
(Piper takes ~1.5 s to load and ~0.05x real time to run).
"""

from __future__ import annotations

import difflib
import functools
import re

import numpy as np

__all__ = [
    "fuzzy_ratio",
    "heard_whole",
    "normalise_words",
    "phone_line",
    "resample",
    "synth",
    "synth_phone_16k",
    "with_pauses",
]

PIPER_RATE = 22050


_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                 "sixteen seventeen eighteen nineteen twenty").split()


def normalise_words(text: str) -> list[str]:
    """Lower-case words without punctuation ("Hello, World!" → ["hello", "world"]); times of day written either
    way Whisper writes them ("8 a.m.", "8am", "8 AM") come out the same: ["eight", "am"]; so do the numbers up to
    twenty, in words or digits ("We open at 9" → [..., "nine"]: Whisper writes either)."""
    text = re.sub(r"\b([ap])\.\s?m\b\.?", r"\1m", text.lower().replace("’", "'"))
    text = re.sub(r"(\d)([ap]m)\b", r"\1 \2", text)
    words = re.findall(r"[a-z0-9']+", text)
    return [_NUMBER_WORDS[int(w)] if w.isdigit() and int(w) <= 20 else w for w in words]


def fuzzy_ratio(a: str, b: str) -> float:
    """Word-level similarity in [0, 1] (difflib ratio over normalised word lists)."""
    wa, wb = normalise_words(a), normalise_words(b)
    if not wa and not wb:
        return 1.0
    return difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio()


def resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Whole-signal resampling (the project's resampler, scipy as a fallback)."""
    if in_rate == out_rate:
        return x.astype(np.float32, copy=True)
    try:
        from telebridge.audio.resample import resample_once

        return np.asarray(resample_once(x, in_rate, out_rate), dtype=np.float32)
    except ImportError:  # pragma: no cover - only before the audio package exists
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(in_rate, out_rate)
        return resample_poly(x, out_rate // g, in_rate // g).astype(np.float32)


def phone_line(x8k: np.ndarray) -> np.ndarray:
    """What a caller's audio looks like after a μ-law phone leg (8 kHz float32 in/out)."""
    try:
        from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode

        return np.asarray(ulaw_decode_float(ulaw_encode(x8k.astype(np.float32))), dtype=np.float32)
    except ImportError:  # pragma: no cover - only before the audio package exists
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import audioop
        pcm = (np.clip(x8k, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        out = audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)
        return np.frombuffer(out, dtype=np.int16).astype(np.float32) / 32768.0


@functools.cache
def _voice():  # type: ignore[no-untyped-def]
    from telebridge.providers.tts.piper import default_piper_voice, load_piper_voice

    return load_piper_voice(default_piper_voice())


@functools.cache
def _synth_22k(text: str) -> np.ndarray:
    from piper.config import SynthesisConfig

    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, volume=0.8)
    audio = np.concatenate([c.audio_float_array for c in _voice().synthesize(text, config)])
    audio = audio.astype(np.float32)
    audio.flags.writeable = False
    return audio


@functools.cache
def _synth_cached(text: str, rate: int) -> np.ndarray:
    audio = resample(_synth_22k(text), PIPER_RATE, rate)
    audio.flags.writeable = False
    return audio


def synth(text: str, rate: int = 8000) -> np.ndarray:
    """Deterministic Piper speech of ``text`` as float32 mono at ``rate`` (a fresh copy)."""
    return _synth_cached(text, rate).copy()


def synth_phone_16k(text: str) -> np.ndarray:
    """Speech as the STT engine receives it: Piper → 8 kHz → μ-law → 16 kHz."""
    return resample(phone_line(synth(text, 8000)), 8000, 16000)


def quiet_gaps(x: np.ndarray, rate: int, *, floor_db: float = -40.0, min_gap: float = 0.08) -> list[tuple[int, int]]:
    """Quiet stretches inside speech (sample ranges), by 10 ms frame energy."""
    hop = rate // 100
    n = len(x) // hop
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    floor = 10 ** (floor_db / 20)
    loud = np.flatnonzero(rms > floor)
    gaps: list[tuple[int, int]] = []
    start = None
    for i in range(int(loud[0]), int(loud[-1]) + 1) if loud.size else ():
        if rms[i] <= floor and start is None:
            start = i
        elif rms[i] > floor and start is not None:
            if (i - start) * hop >= min_gap * rate:
                gaps.append((start * hop, i * hop))
            start = None
    return gaps


def with_pauses(sentence: str, gaps: tuple[int, ...], pause: float, rate: int = 8000, *,
                min_gap: float = 0.08) -> np.ndarray:
    """One continuous sentence (so the voice's pitch at each cut is mid-sentence, as a caller's would be) with its
    inner quiet gaps number ``gaps`` (0 = the first) lengthened to ``pause`` seconds: a caller who stops to think
    ("my number is four one five … five five five"). Gaps of at least ``min_gap`` seconds count: with the default
    the short stops inside a phrase count too; with ``min_gap=0.2`` only Piper's pauses at punctuation do, so gap
    ``k`` is the ``k``-th comma."""
    x = synth(sentence, rate)
    found = quiet_gaps(x, rate, min_gap=min_gap)
    if not found:
        raise ValueError(f"no pause to stretch in {sentence!r}")
    parts, at = [], 0
    for k in gaps:
        a, b = found[min(k, len(found) - 1)]
        mid = (a + b) // 2
        parts += [x[at:mid], np.zeros(int(pause * rate), np.float32)]
        at = mid
    parts.append(x[at:])
    return np.concatenate(parts).astype(np.float32)


def leading_text(segments: list, expected: str) -> tuple[str, str]:
    """Split the heard agent segments into (the first ``expected``-sized utterance, the rest).

    A reply is spoken sentence by sentence (or clause by clause); on a loaded machine a short gap between two
    pieces can split what was meant as one utterance into two heard segments. Join leading segments until they
    hold as many words as ``expected``, so tests compare what was heard, not where a gap happened to fall.
    """
    want = len(normalise_words(expected))
    texts = [getattr(s, "text", s) for s in segments]
    words = 0
    for i, text in enumerate(texts):
        words += len(normalise_words(text))
        if words >= want - 1:
            return " ".join(texts[: i + 1]), " ".join(texts[i + 1 :])
    return " ".join(texts), ""


async def heard_whole(call, segments: list | None = None) -> str:
    """What the listener of a simulated call heard from the first to the last of ``segments`` (default: all the
    agent's), transcribed by Whisper as one utterance, gaps included.

    The simulator transcribes each heard segment on its own; a clause cut off by a short gap (a loaded machine
    synthesizes the next clause late) is then too short for Whisper to hear well ("Hi Margaret," → "I'm
    Margaret."). Transcribing the whole span compares what was heard, wherever a gap happened to fall.
    """
    from telebridge.simulator.speech import _default_stt, _transcribe_8k

    segments = call.agent_segments if segments is None else segments
    if not segments:
        return ""
    rate, pad = 8000, 800  # 0.1 s either side, as the simulator pads its segments
    start, end = int(segments[0].start * rate) - pad, int(segments[-1].end * rate) + pad
    return await _transcribe_8k(_default_stt(), call.heard[max(0, start) : end])
