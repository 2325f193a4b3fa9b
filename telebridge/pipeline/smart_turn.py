"""Smart Turn v3: an audio-native model of whether the caller has finished their turn (BSD-2-Clause, ~8 MB ONNX).

The model listens to the last 8 s of the caller's speech (prosody, pace, intonation -- not words) and returns the
probability that the turn is complete. Its weights come from the ``pipecat-ai`` wheel (the ``turn`` extra), which
ships them as ``pipecat/audio/turn/smart_turn/data/smart-turn-v3.*-cpu.onnx``; telebridge only reads that file
(it never imports pipecat) and runs it with onnxruntime, like Silero.

Input: Whisper-style log-mel features of 8 s at 16 kHz (80 bands × 800 frames), computed here with numpy. The
audio is zero-padded at the front to 8 s (or its last 8 s kept), normalised to zero mean and unit variance, and
turned into a power spectrogram (400-point periodic Hann window, hop 160), 80 Slaney mel bands from 0 to 8 kHz,
``log10`` floored at 1e-10, clamped to 8 decades below its peak and scaled as ``(x + 4) / 4`` -- what the model
was trained on (the Whisper feature extractor with an 8 s chunk).

Cost on this machine's cores: ~20 ms of features + ~60 ms of inference per question asked, once per pause.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import threading
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
WINDOW_SECONDS = 8
WINDOW = SAMPLE_RATE * WINDOW_SECONDS  # 128000 samples
N_FFT = 400
HOP = 160
N_MELS = 80
FRAMES = WINDOW // HOP  # 800

MODEL_GLOB = "smart-turn-v3*-cpu.onnx"
MODEL_DIR = ("audio", "turn", "smart_turn", "data")


class SmartTurnUnavailable(RuntimeError):
    """The model file is not installed (the ``turn`` extra)."""


def default_model_path() -> Path:
    """The newest Smart Turn v3 CPU model shipped in the installed ``pipecat-ai`` wheel."""
    spec = importlib.util.find_spec("pipecat")  # locates the package without importing it
    roots = list(spec.submodule_search_locations or []) if spec else []
    found = sorted(
        (p for root in roots for p in Path(root, *MODEL_DIR).glob(MODEL_GLOB)),
        key=lambda p: tuple(int(n) for n in re.findall(r"\d+", p.name)),
    )
    if not found:
        raise SmartTurnUnavailable(
            "the Smart Turn model is not installed: pip install 'telebridge[turn]' (it ships in the pipecat-ai wheel), "
            "or set end_of_turn_model=False in the agent's SessionConfig")
    return found[-1]


# --- features -----------------------------------------------------------------------------------------------

def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log_part = 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0))
    return np.where(mel >= 15.0, log_part, linear)


@functools.cache
def mel_filters() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangular filters with Slaney area normalisation."""
    bins = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    tri = np.clip(np.minimum(rising, falling), 0.0, None)
    return tri * (2.0 / (upper - lower))


@functools.cache
def _hann() -> np.ndarray:
    return np.hanning(N_FFT + 1)[:-1]  # periodic


def to_model_rate(audio: np.ndarray, rate: int) -> np.ndarray:
    """``audio`` at ``rate`` (8 kHz phone audio, or 16 kHz) as float32 at the model's 16 kHz."""
    audio = np.asarray(audio, dtype=np.float32)
    if rate == SAMPLE_RATE:
        return audio
    from scipy.signal import resample_poly

    g = np.gcd(rate, SAMPLE_RATE)
    return resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)


def fit_window(audio: np.ndarray) -> np.ndarray:
    """The last 8 s of ``audio`` (float32 at 16 kHz), zero-padded at the front."""
    audio = np.asarray(audio, dtype=np.float32).ravel()
    if audio.size >= WINDOW:
        return audio[-WINDOW:]
    out = np.zeros(WINDOW, dtype=np.float32)
    out[WINDOW - audio.size :] = audio
    return out


def log_mel(audio: np.ndarray) -> np.ndarray:
    """(80, 800) float32 features of 8 s of 16 kHz audio (see the module docstring)."""
    x = fit_window(audio).astype(np.float64)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]  # (801, 400)
    power = np.abs(np.fft.rfft(frames * _hann(), axis=-1)) ** 2  # (801, 201)
    mel = np.log10(np.maximum(power @ mel_filters().T, 1e-10)).T[:, :FRAMES]  # (80, 800)
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)


# --- the model ------------------------------------------------------------------------------------------------

class SmartTurnModel:
    """One ONNX session; :meth:`predict` is thread-safe (one inference at a time) and blocking: call it from a
    worker thread."""

    def __init__(self, path: str | Path | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path else default_model_path()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._lock = threading.Lock()

    def predict(self, batch: list[np.ndarray]) -> list[float]:
        """Probability that each turn is complete; each item is float32 16 kHz audio ending where the caller
        stopped."""
        if not batch:
            return []
        features = np.stack([log_mel(a) for a in batch])
        with self._lock:
            (out,) = self._session.run(None, {self._input: features})
        return [float(p) for p in np.asarray(out).reshape(-1)]


_shared: dict[str, SmartTurnModel] = {}
_shared_lock = threading.Lock()


def shared_smart_turn(path: str | None = None) -> SmartTurnModel:
    """One model per process and path (loading takes ~0.2 s and 30 MB)."""
    key = str(path or "")
    with _shared_lock:
        model = _shared.get(key)
        if model is None:
            model = _shared[key] = SmartTurnModel(path)
        return model
