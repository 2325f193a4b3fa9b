"""Real speech behind the fakes' protocols: the embedded Whisper and Piper, so what a fake provider "hears" and
"says" is real (a test can check that the heard answer transcribes to the agent's text).

One instance per process, loaded on first use, running in its own small thread pool (never the fake's event
loop, never the telebridge server's pools).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["speech_backend", "SpeechBackend"]


class SpeechBackend:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fake-speech")
        self._lock = threading.Lock()
        self._whisper = None
        self._piper = None

    def _models(self):  # noqa: ANN202
        with self._lock:
            if self._whisper is None:
                from faster_whisper import WhisperModel

                from telebridge.providers.stt.whisper import default_whisper_dir
                from telebridge.providers.tts.piper import default_piper_voice, load_piper_voice

                self._whisper = WhisperModel(default_whisper_dir(), device="cpu", compute_type="int8",
                                             cpu_threads=1, local_files_only=True)
                self._piper = load_piper_voice(default_piper_voice())
        return self._whisper, self._piper

    @property
    def piper_rate(self) -> int:
        return int(self._models()[1].config.sample_rate)

    def _transcribe(self, audio16k: np.ndarray) -> str:
        whisper, _ = self._models()
        x = np.asarray(audio16k, dtype=np.float32)
        if x.size == 0 or float(np.sqrt(np.mean(x * x))) < 1e-3:
            return ""
        segments, _ = whisper.transcribe(x, language="en", beam_size=1, vad_filter=False,
                                         condition_on_previous_text=False, without_timestamps=True)
        return " ".join(s.text.strip() for s in segments if s.text.strip())

    def _synthesize(self, text: str, rate: int) -> np.ndarray:
        """int16 mono at ``rate`` (resampled from Piper's own rate)."""
        from telebridge.audio.resample import resample_once

        _, piper = self._models()
        chunks = [c.audio_int16_array for c in piper.synthesize(text)]
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        pcm = np.concatenate(chunks).astype(np.float32) / 32768.0
        src = int(piper.config.sample_rate)
        if rate != src:
            pcm = resample_once(pcm, src, rate)
        return np.clip(np.round(pcm * 32767.0 * 0.9), -32768, 32767).astype(np.int16)

    async def transcribe(self, audio16k: np.ndarray) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._transcribe, audio16k)

    async def synthesize(self, text: str, rate: int) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._synthesize, text, rate)


_BACKEND: SpeechBackend | None = None


def speech_backend() -> SpeechBackend:
    global _BACKEND
    if _BACKEND is None:
        _BACKEND = SpeechBackend()
    return _BACKEND
