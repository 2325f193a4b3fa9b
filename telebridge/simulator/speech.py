"""Speech for simulated callers: Piper to synthesize what they say, Whisper to transcribe what they hear.

Loaded lazily, once per process: offline tests with ``transcribe=False`` and no :class:`Say` never load them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .constants import RATE, FloatArray

if TYPE_CHECKING:
    from telebridge.providers.stt.whisper import WhisperSTT
    from telebridge.providers.tts.piper import PiperTTS

_stt_singleton: WhisperSTT | None = None
_say_cache: dict[str, FloatArray] = {}


_tts_singleton: PiperTTS | None = None
_stt_singleton: WhisperSTT | None = None
_say_cache: dict[str, FloatArray] = {}


def _default_tts() -> PiperTTS:
    """One Piper voice per process; loading it costs more than a short call."""
    global _tts_singleton
    if _tts_singleton is None:
        from telebridge.inference import InferencePool
        from telebridge.providers.tts.piper import PiperTTS

        # Noise off: the same text always gives the same audio, so simulated calls are repeatable.
        _tts_singleton = PiperTTS(
            pool=InferencePool("simulator-tts", max_workers=1, max_pending=64), noise_scale=0.0, noise_w_scale=0.0
        )
    return _tts_singleton


def _default_stt() -> WhisperSTT:
    global _stt_singleton
    if _stt_singleton is None:
        from telebridge.inference import InferencePool
        from telebridge.providers.stt.whisper import WhisperSTT

        _stt_singleton = WhisperSTT(pool=InferencePool("simulator-stt", max_workers=1, max_pending=64))
    return _stt_singleton


def _resample(x: npt.NDArray[Any], in_rate: int, out_rate: int) -> FloatArray:
    x = np.asarray(x, dtype=np.float32)
    if in_rate == out_rate:
        return x
    from telebridge.audio.resample import resample_once

    return np.asarray(resample_once(x, in_rate, out_rate), dtype=np.float32)


async def _synthesize_8k(tts: PiperTTS, text: str) -> FloatArray:
    pcm = await tts.synthesize(text)
    audio = np.asarray(pcm, dtype=np.float32)
    if np.asarray(pcm).dtype == np.int16:
        audio = audio / np.float32(32768.0)
    return _resample(audio, int(tts.sample_rate), RATE)


async def _transcribe_8k(stt: WhisperSTT, audio: FloatArray) -> str:
    if audio.size == 0:
        return ""
    result = await stt.transcribe(_resample(audio, RATE, 16000))
    return str(result.text).strip()


async def say_audio(text: str, tts: PiperTTS | None = None) -> FloatArray:
    """``text`` spoken at 8 kHz; with the default (deterministic) voice, cached across calls."""
    if tts is not None:
        return await _synthesize_8k(tts, text)
    if text not in _say_cache:
        _say_cache[text] = await _synthesize_8k(_default_tts(), text)
    return _say_cache[text]
