"""DTMF (touch-tone) keys as audio, both ways, sans-I/O: :func:`dtmf_tones` makes them, :class:`DtmfDetector`
hears them.

Why in-band audio: an agent on a Media Stream can only send audio (``media``), marks and ``clear``; Twilio has
no "send digits" stream message, and replacing the call's TwiML with ``<Play digits>`` ends the stream, and
with it the conversation. Tones played as ordinary agent audio keep the stream, the mark ledger and the
history intact, and a phone menu on the far end (PSTN, G.711 μ-law end to end) decodes them like a handset's.

The tones follow ITU-T Q.23 (frequency pairs) and stay well inside Q.24's acceptance limits: each key a
``tone`` seconds long (default 0.12 s, ≥ 40 ms required), ``gap`` seconds of silence after it (default 0.12 s,
≥ 40 ms required), the high group 2 dB above the low group (a little positive twist, as handsets do, since
lines lose more at high frequencies), both about −7/−9 dBm0, with 4 ms raised-cosine edges so no click
spreads energy into other keys' bands. ``w`` is a half-second pause, as in Twilio's ``<Play digits>``.

The detector is the classic Goertzel bank: 205-sample blocks (25.6 ms at 8 kHz), half-overlapping, the power
at the eight key frequencies measured per block. A block holds a key when its strongest low and high
frequencies together carry most of the block's energy (speech spreads its energy over harmonics and fails
this), neither is much weaker than the other (twist within ±8 dB), and the level is above −40 dBFS. A key
is reported once two blocks in a row hold it (about 30 ms of tone; Q.24 asks that 40 ms be accepted), and not
again until two blocks without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DTMF_KEYS", "DTMF_FREQS", "MAX_DTMF_CHARS", "DtmfHit", "DtmfDetector", "normalise_digits", "dtmf_tones",
    "dtmf_duration",
]

LOW = (697.0, 770.0, 852.0, 941.0)
HIGH = (1209.0, 1336.0, 1477.0, 1633.0)
_LAYOUT = ("123A", "456B", "789C", "*0#D")
DTMF_FREQS: dict[str, tuple[float, float]] = {
    key: (LOW[row], HIGH[col]) for row, keys in enumerate(_LAYOUT) for col, key in enumerate(keys)
}
DTMF_KEYS = "0123456789*#"  # what a phone keypad has (A-D exist only on military and test sets)
PAUSE = "w"
MAX_DTMF_CHARS = 40  # keys and pauses per request: a menu choice, an account number and a PIN fit
_SEPARATORS = re.compile(r"[\s\-().]+")

# Levels (amplitude re full scale; a full-scale sine is +3.17 dBm0 in μ-law): low group −9 dBm0, high −7 dBm0.
LOW_AMPLITUDE = 10 ** ((-9.0 - 3.17) / 20)
HIGH_AMPLITUDE = 10 ** ((-7.0 - 3.17) / 20)


def normalise_digits(text: str) -> str:
    """The keys to press in ``text``: 0-9, ``*``, ``#`` and ``w`` (half a second's pause).

    Spaces, hyphens, dots and brackets are dropped ("555-0123" is a number read out, not a key); anything else
    raises ``ValueError`` with a message an LLM can act on, as does an empty or over-long sequence.
    """
    if not isinstance(text, str):
        raise ValueError("digits must be a string such as '1' or '1234#'")
    keys = _SEPARATORS.sub("", text).replace("W", PAUSE)
    bad = sorted({c for c in keys if c not in DTMF_KEYS and c != PAUSE})
    if bad:
        raise ValueError(f"digits may only hold 0-9, * and # (and w for a half-second pause), not {''.join(bad)!r}")
    if not keys.strip(PAUSE):
        raise ValueError("digits must hold at least one key (0-9, * or #)")
    if len(keys) > MAX_DTMF_CHARS:
        raise ValueError(f"at most {MAX_DTMF_CHARS} keys and pauses at a time, got {len(keys)}")
    return keys


def dtmf_duration(keys: str, *, tone: float = 0.12, gap: float = 0.12, pause: float = 0.5) -> float:
    """Seconds :func:`dtmf_tones` takes for ``keys`` (already normalised)."""
    presses = sum(1 for k in keys if k != PAUSE)
    return presses * (tone + gap) + keys.count(PAUSE) * pause


def dtmf_tones(
    keys: str, rate: int = 8000, *, tone: float = 0.12, gap: float = 0.12, pause: float = 0.5, edge: float = 0.004
) -> np.ndarray:
    """float32 audio at ``rate`` pressing ``keys`` (as :func:`normalise_digits` returns them), in order.

    Every key is ``tone`` seconds of its frequency pair then ``gap`` seconds of silence; ``w`` adds ``pause``
    seconds of silence. Pure: the same input always gives the same samples.
    """
    keys = normalise_digits(keys)
    if rate < 4000:
        raise ValueError("rate must be at least 4000 Hz to carry the 1633 Hz tone")
    if not (0.04 <= tone <= 2.0 and 0.04 <= gap <= 2.0 and 0 <= pause <= 5.0):
        raise ValueError("tone and gap must be within 40 ms..2 s (ITU-T Q.24), pause within 0..5 s")
    n_tone, n_gap, n_pause = int(round(tone * rate)), int(round(gap * rate)), int(round(pause * rate))
    t = np.arange(n_tone) / rate
    ramp = min(n_tone // 2, max(1, int(round(edge * rate))))
    envelope = np.ones(n_tone)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    envelope[:ramp], envelope[n_tone - ramp:] = rise, rise[::-1]
    parts: list[np.ndarray] = []
    for key in keys:
        if key == PAUSE:
            parts.append(np.zeros(n_pause))
            continue
        low, high = DTMF_FREQS[key]
        pair = LOW_AMPLITUDE * np.sin(2 * np.pi * low * t) + HIGH_AMPLITUDE * np.sin(2 * np.pi * high * t)
        parts.append(pair * envelope)
        parts.append(np.zeros(n_gap))
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


@dataclass(frozen=True, slots=True)
class DtmfHit:
    key: str
    start: float  # seconds of audio fed when the tone began (block resolution)
    at: float  # seconds of audio fed when it was recognised


class DtmfDetector:
    """Feed audio at ``rate`` (8 kHz: the phone line) in any chunk sizes; :meth:`push` returns the keys heard."""

    def __init__(
        self,
        rate: int = 8000,
        *,
        block: int = 205,
        hop: int = 102,
        min_dbfs: float = -40.0,
        dominance: float = 0.6,
        max_twist_db: float = 8.0,
        confirm_blocks: int = 2,
        release_blocks: int = 2,
    ) -> None:
        self.rate = rate
        self.block = block * rate // 8000
        self.hop = hop * rate // 8000
        freqs = np.array(LOW + HIGH)
        n = np.arange(self.block)
        self._basis = np.exp(-2j * np.pi * np.outer(freqs, n) / rate).astype(np.complex128)
        self.min_power = 10 ** (min_dbfs / 10)
        self.dominance = dominance
        self.max_twist = 10 ** (max_twist_db / 10)
        self.confirm_blocks, self.release_blocks = confirm_blocks, release_blocks
        self._buf = np.zeros(0, np.float64)
        self._consumed = 0  # samples dropped from the front of _buf
        self._candidate: str | None = None
        self._run = 0
        self._run_start = 0
        self._current: str | None = None  # the key reported and still sounding
        self._misses = 0

    def classify(self, x: np.ndarray) -> str | None:
        """The key one block holds, or None."""
        x = np.asarray(x, np.float64)
        energy = float(np.dot(x, x))
        if energy / len(x) < self.min_power:
            return None
        power = np.abs(self._basis[:, : len(x)] @ x) ** 2
        lo, hi = int(np.argmax(power[:4])), 4 + int(np.argmax(power[4:]))
        p_lo, p_hi = float(power[lo]), float(power[hi])
        if p_lo <= 0 or p_hi <= 0 or not (1 / self.max_twist <= p_hi / p_lo <= self.max_twist):
            return None
        # A pure pair has 2(|X_lo|² + |X_hi|²) / (N Σx²) = 1; speech and noise fall far short.
        if 2 * (p_lo + p_hi) / (len(x) * energy) < self.dominance:
            return None
        for group, best in ((power[:4], p_lo), (power[4:], p_hi)):
            if np.sort(group)[-2] > best / 4:  # a second strong frequency in the group: not a key
                return None
        return _LAYOUT[lo][hi - 4]

    def push(self, audio: np.ndarray) -> list[DtmfHit]:
        """Audio in; the keys recognised in it (each press once)."""
        hits: list[DtmfHit] = []
        self._buf = np.concatenate([self._buf, np.asarray(audio, np.float64)])
        while len(self._buf) >= self.block:
            start = self._consumed
            key = self.classify(self._buf[: self.block])
            self._buf = self._buf[self.hop:]
            self._consumed += self.hop
            if self._current is not None:
                if key == self._current:
                    self._misses = 0
                    continue
                self._misses += 1
                if key is None and self._misses < self.release_blocks:
                    continue  # a block or so without the key: a dropout, not the end of the press
                self._current, self._misses = None, 0
            if key is None:
                self._candidate, self._run = None, 0
                continue
            if key == self._candidate:
                self._run += 1
            else:
                self._candidate, self._run, self._run_start = key, 1, start
            if self._run >= self.confirm_blocks:
                hits.append(DtmfHit(key, self._run_start / self.rate, (start + self.block) / self.rate))
                self._current, self._candidate, self._run = key, None, 0
        return hits


def detect_dtmf(audio: np.ndarray, rate: int = 8000) -> str:
    """Every key in ``audio``, in order (a convenience over :class:`DtmfDetector`)."""
    return "".join(hit.key for hit in DtmfDetector(rate).push(audio))


__all__.append("detect_dtmf")
