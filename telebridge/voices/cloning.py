"""Voice "cloning" for the embedded Piper stack — an approximation, said plainly.

Piper cannot learn a new speaker from a sample. What telebridge does instead:

1. measure the sample's median pitch and articulation rate (:mod:`.analysis`; syllables come from a Whisper
   transcript of the sample when STT is available, from the energy envelope otherwise);
2. measure every available Piper base voice the same way, at three ``length_scale`` settings, which gives each
   base's pitch and how its rate responds to ``length_scale`` (Piper's response is not linear: ×0.8 length
   gives about ×1.15 rate);
3. pick the base voice that needs the smallest change, and set its ``pitch`` factor and ``length_scale`` so
   that its pitch and pace match the sample's.

The result sounds like the base voice at the sample's pitch and pace — not like the person in the sample.
Timbre, accent and intonation are not carried over. Real cloning needs a provider that supports it
(ElevenLabs and Cartesia do; they will be wired here when their TTS clients land).

Only the derived settings and the measurements are kept; the uploaded audio is discarded after analysis.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from telebridge.config.tts import PiperTTS

from .analysis import (
    NotEnoughSpeech,
    VoiceProfile,
    articulation_seconds,
    count_syllables,
    measure,
    median_f0,
    prepare,
)
from .decode import UnusableAudio
from .store import VoiceEntry, VoiceStore, new_cloned_name

log = logging.getLogger("telebridge.voices.cloning")

# Read by every base voice for calibration: ~9 s of conversational English (statements and questions, since
# a voice's median pitch depends on the kind of sentence as much as on the voice).
REFERENCE_TEXT = (
    "Hello, I am calling about my appointment on Friday. Can we move it to next week? "
    "My tooth has been hurting since the weekend, so I would like to see a dentist soon. "
    "What time do you open in the morning? Thanks a lot, have a nice day."
)
CALIBRATION_SCALES = (0.75, 1.0, 1.33)
PITCH_RANGE = (0.7, 1.4)  # TTS.Piper's pitch bounds
LENGTH_RANGE = (0.5, 2.0)  # TTS.Piper's length_scale bounds
PROFILE_CACHE = "piper_profiles.json"


@dataclass(frozen=True, slots=True)
class BaseProfile:
    """A Piper base voice at pitch 1: median F0, articulation rate at length_scale 1, and rate ∝ ls^-exponent."""

    f0_hz: float
    rate_at_1: float
    exponent: float

    def length_scale_for(self, rate: float) -> float:
        return float((self.rate_at_1 / rate) ** (1.0 / self.exponent))


@dataclass(frozen=True, slots=True)
class Derived:
    base: VoiceEntry
    pitch: float
    length_scale: float
    cost: float


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def gender_from_f0(f0_hz: float) -> str:
    """A coarse label for listings: typical adult male speech is 85–155 Hz, female 165–255 Hz."""
    if f0_hz < 155.0:
        return "male"
    if f0_hz > 180.0:
        return "female"
    return "neutral"


def measure_base(tts: PiperTTS) -> BaseProfile:
    """Synthesize the reference text at the calibration scales and measure (blocking; ~1 s of CPU)."""
    from piper.config import SynthesisConfig

    from telebridge.providers.tts.piper import default_piper_voice, load_piper_voice

    voice = load_piper_voice(tts.model or default_piper_voice())
    syllables = count_syllables(REFERENCE_TEXT)
    rates: list[float] = []
    f0 = float("nan")
    for scale in CALIBRATION_SCALES:
        config = SynthesisConfig(speaker_id=tts.speaker, length_scale=scale, noise_scale=0.0, noise_w_scale=0.0)
        audio = np.concatenate([c.audio_float_array for c in voice.synthesize(REFERENCE_TEXT, config)])
        x = prepare(audio, int(voice.config.sample_rate))
        rates.append(syllables / max(articulation_seconds(x), 1e-3))
        if scale == 1.0:
            f0, _ = median_f0(x)
    slope = float(np.polyfit(np.log(CALIBRATION_SCALES), np.log(rates), 1)[0])
    return BaseProfile(f0_hz=f0, rate_at_1=rates[CALIBRATION_SCALES.index(1.0)], exponent=_clamp(-slope, (0.2, 1.5)))


def derive(sample: VoiceProfile, bases: list[tuple[VoiceEntry, BaseProfile]]) -> Derived:
    """The base voice and settings closest to ``sample``: least change first, any residual weighs heavily."""
    best: Derived | None = None
    for entry, prof in bases:
        pitch_raw = sample.f0_hz / prof.f0_hz
        length_raw = prof.length_scale_for(sample.syllable_rate)
        pitch = _clamp(pitch_raw, PITCH_RANGE)
        length = _clamp(length_raw, LENGTH_RANGE)
        residual = abs(math.log(pitch_raw / pitch)) + abs(math.log(length_raw / length))
        cost = abs(math.log(pitch)) + 0.5 * abs(math.log(length)) + 4.0 * residual
        if best is None or cost < best.cost:
            best = Derived(entry, round(pitch, 3), round(length, 3), cost)
    if best is None:
        raise RuntimeError("no Piper base voice to derive a clone from")
    return best


Transcribe = Callable[[npt.NDArray[np.float32]], Awaitable[str]]
RunBlocking = Callable[..., Awaitable[Any]]


class PiperCloner:
    """Derives cloned voices from samples and stores them in the :class:`VoiceStore`."""

    def __init__(self, store: VoiceStore, *, run_blocking: RunBlocking, transcribe: Transcribe | None = None) -> None:
        self.store = store
        self._run = run_blocking
        self._transcribe = transcribe
        self._profiles: dict[str, BaseProfile] = {}

    @staticmethod
    def _key(tts: PiperTTS) -> str:
        from telebridge.providers.tts.piper import default_piper_voice

        model = Path(tts.model or default_piper_voice())
        try:
            stamp = f"{model.stat().st_size}:{int(model.stat().st_mtime)}"
        except OSError:
            stamp = "?"
        return f"{model}|{tts.speaker}|{stamp}|{CALIBRATION_SCALES}"

    def _cache_path(self) -> Path:
        return self.store.clone_dir / PROFILE_CACHE

    def _load_cache(self) -> None:
        try:
            raw = json.loads(self._cache_path().read_text(encoding="utf-8"))
            for key, value in raw.items():
                self._profiles.setdefault(key, BaseProfile(**value))
        except (OSError, ValueError, TypeError):
            pass

    def _save_cache(self) -> None:
        try:
            self.store.clone_dir.mkdir(parents=True, exist_ok=True)
            self._cache_path().write_text(
                json.dumps({k: asdict(v) for k, v in self._profiles.items()}, indent=1), encoding="utf-8"
            )
        except OSError as exc:
            log.warning("cannot cache Piper voice profiles: %s", exc)

    async def bases(self) -> list[tuple[VoiceEntry, BaseProfile]]:
        """Every distinct Piper base voice (model + speaker) with its profile, measured once and cached on disk."""
        if not self._profiles:
            self._load_cache()
        seen: set[tuple[str | None, int | None]] = set()
        out: list[tuple[VoiceEntry, BaseProfile]] = []
        dirty = False
        for entry in self.store.piper_voices():
            tts = entry.tts
            assert isinstance(tts, PiperTTS)
            if (tts.model, tts.speaker) in seen:
                continue
            seen.add((tts.model, tts.speaker))
            key = self._key(tts)
            prof = self._profiles.get(key)
            if prof is None:
                prof = await self._run(measure_base, PiperTTS(model=tts.model, speaker=tts.speaker))
                self._profiles[key] = prof
                dirty = True
            out.append((entry, prof))
        if dirty:
            self._save_cache()
        return out

    async def clone(self, audio: npt.NDArray[np.float32], rate: int) -> VoiceEntry:
        """Derive, store and return a cloned voice; raises :class:`UnusableAudio` for samples without speech."""
        try:
            x = await self._run(prepare, audio, rate)
        except NotEnoughSpeech as exc:
            raise UnusableAudio(str(exc)) from exc
        transcript = None
        if self._transcribe is not None:
            try:
                transcript = await self._transcribe(x)
            except Exception as exc:  # cloning still works without a transcript, just less precisely
                log.warning("voice cloning: transcription failed (%s); counting syllables from the envelope", exc)
        try:
            sample = await self._run(measure, x, transcript)
        except NotEnoughSpeech as exc:
            raise UnusableAudio(str(exc)) from exc
        derived = derive(sample, await self.bases())
        base_tts = derived.base.tts
        assert isinstance(base_tts, PiperTTS)
        entry = VoiceEntry(
            name=new_cloned_name(),
            language=derived.base.language,
            gender=gender_from_f0(sample.f0_hz),  # type: ignore[arg-type]
            tts=PiperTTS(model=base_tts.model, speaker=base_tts.speaker, length_scale=derived.length_scale,
                         pitch=derived.pitch),
            clone_info={
                "method": "piper-pitch-rate-match",
                "base_voice": derived.base.name,
                "sample": {"f0_hz": round(sample.f0_hz, 1), "syllables_per_second": round(sample.syllable_rate, 2),
                           "speech_seconds": round(sample.speech_seconds, 2),
                           "syllables_from": "transcript" if transcript and transcript.strip() else "envelope"},
            },
        )
        stored = self.store.add_clone(entry)
        log.info("cloned voice %s: base %s, pitch ×%.3f, length_scale %.3f (sample %.0f Hz, %.2f syl/s)",
                 stored.name, derived.base.name, derived.pitch, derived.length_scale, sample.f0_hz,
                 sample.syllable_rate)
        return stored
