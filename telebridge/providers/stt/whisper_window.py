"""Whisper on a window sized to the utterance: the encoder's cost without the 30 s of padding.

Whisper's encoder always sees 30 s of audio (3000 mel frames); a 2 s phone turn is 28 s of silence, and the
encoder is most of the time (tiny.en, int8, one thread: 0.63 s of encoder for the 30 s window, 0.06 s for 10 s).
CTranslate2 runs the encoder on fewer frames, so a turn is encoded in a window just longer than itself
(:func:`window_seconds`: at least 12 s). The model was trained on 30 s windows, and with the text-only prompt
it tends to repeat itself past the end of a short window ("What are your opening hours? What are your opening
hours"). Decoding *with timestamps* gives each segment its start and end on the audio's clock, so what the
model says about the padding -- segments starting at or after the end of the audio -- is dropped
(:func:`parse_tokens`). A result that still looks wrong (no end-of-text within the token budget, a segment
that repeats the previous one, more words than anyone says in that time) is rejected by :func:`suspicious`,
and the caller decodes the full 30 s window instead.

Pure functions on token ids and numbers: the model run itself is in :mod:`.whisper`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MIN_WINDOW_SECONDS = 12  # shorter windows mishear (and loop) more often: see bench/bench_whisper.py
MAX_WINDOW_SECONDS = 30  # Whisper's own window: longer audio is decoded the usual way
TAIL_SECONDS = 1.0  # silence kept after the audio inside the window
TIME_PRECISION = 0.02  # seconds per timestamp token
MAX_WORDS_PER_SECOND = 6.0  # fast speech is ~4; beyond this the model is making words up
_LOOP = re.compile(r"(.{3,}?)\1{2,}")  # a stretch of three or more characters said three times over
# Timestamped decoding in a short window is less sure of itself than the 30 s window; a beam of five recovers
# the words greedy decoding loses at the edge of a pause ("My number is..." heard as "My numbers.").
BEAM_SIZE = 5
LATE_START = 0.1  # a segment starting this close to the audio's end (or later) is about the padding


def window_seconds(duration: float) -> int | None:
    """The encoder window for ``duration`` seconds of audio, or ``None``: use the full 30 s decode."""
    seconds = max(MIN_WINDOW_SECONDS, math.ceil(duration + TAIL_SECONDS))
    return seconds if seconds < MAX_WINDOW_SECONDS else None


def max_new_tokens(duration: float) -> int:
    """Token budget: about five tokens a second of speech plus two timestamps a segment, and a margin."""
    return int(16 + 8 * duration)


@dataclass(frozen=True, slots=True)
class Segment:
    start: float
    end: float | None  # None: the model stopped (end of text, or the budget) inside the segment
    tokens: tuple[int, ...]


def parse_tokens(ids: list[int], *, timestamp_begin: int, duration: float) -> list[Segment]:
    """Split a timestamped decode into segments, dropping those that start after the audio has ended.

    ``ids`` are the generated tokens after the prompt, without the end-of-text token: ``<|t0|> words <|t1|>``
    repeated; a segment left open at the end (no closing timestamp) is kept with ``end=None``.
    """
    segments: list[Segment] = []
    start: float | None = None
    words: list[int] = []
    for token in ids:
        if token < timestamp_begin:
            if start is None:
                start = 0.0  # text before any timestamp: the model skipped the opening one
            words.append(token)
            continue
        t = (token - timestamp_begin) * TIME_PRECISION
        if start is None:
            start = t
        else:
            segments.append(Segment(start, t, tuple(words)))
            start, words = None, []
    if start is not None and words:
        segments.append(Segment(start, None, tuple(words)))
    return [s for s in segments if s.start < duration - LATE_START]


def suspicious(segments: list[Segment], texts: list[str], *, finished: bool, duration: float) -> str | None:
    """Why this short-window result should not be trusted (``None``: it is fine). ``texts``: each segment
    decoded; ``finished``: the model emitted end-of-text within its token budget."""
    if not finished:
        return "no end of text"
    cleaned = [" ".join(t.lower().split()) for t in texts]
    for before, after in zip(cleaned, cleaned[1:]):
        if after and (after == before or after in before or before in after):
            return "a segment repeats"
    words = sum(len(t.split()) for t in cleaned)
    if words > MAX_WORDS_PER_SECOND * duration + 2:
        return "too many words"
    if any(_LOOP.search(t) for t in cleaned):
        return "the text repeats itself"
    return None


__all__ = [
    "BEAM_SIZE",
    "MAX_WINDOW_SECONDS",
    "MIN_WINDOW_SECONDS",
    "Segment",
    "max_new_tokens",
    "parse_tokens",
    "suspicious",
    "window_seconds",
]
