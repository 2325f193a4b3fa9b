"""Measuring a voice: median pitch (YIN) and articulation rate (syllables per second of speech).

Cloning for the embedded Piper stack is an *approximation*: Piper cannot learn a new speaker from a sample, so
telebridge picks the available Piper voice whose pitch and pace are closest to the sample and shifts those two
figures to match. Both figures are measured here with the same code for the upload and for every Piper
candidate, so the systematic errors of each estimator cancel out in the ratios the cloner uses.

Pure numpy/scipy, no models (the syllable count may come from a transcript the caller supplies): cheap
enough to run on every upload (tens of milliseconds per 10 s of audio).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

ANALYSIS_RATE = 16000
F0_MIN = 60.0
F0_MAX = 400.0
_FRAME = 0.04  # s; YIN integration window
_HOP = 0.01
_YIN_THRESHOLD = 0.25
_ACTIVE_DB = 35.0  # frames within this many dB of the loud frames count as speech
MIN_VOICED_SECONDS = 0.3


@dataclass(frozen=True, slots=True)
class VoiceProfile:
    """What the cloner matches: median F0 (Hz), syllables per second of speech, and how much speech it saw."""

    f0_hz: float
    syllable_rate: float
    speech_seconds: float
    voiced_seconds: float


class NotEnoughSpeech(ValueError):
    """The audio holds too little voiced speech to measure a voice from."""


def _frame_rms_db(x: npt.NDArray[np.float64], rate: int) -> npt.NDArray[np.float64]:
    win, hop = int(0.02 * rate), int(_HOP * rate)
    if len(x) < win:
        return np.zeros(0)
    frames = sliding_window_view(x, win)[::hop]
    rms = np.sqrt(np.mean(frames * frames, axis=1) + 1e-12)
    return 20.0 * np.log10(rms)


def f0_track(x: npt.ArrayLike, rate: int = ANALYSIS_RATE) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Per-10 ms F0 estimates (Hz, NaN where unvoiced) and the voiced mask, by YIN (de Cheveigné & Kawahara 2002).

    Vectorised over frames: the difference function comes from one FFT cross-correlation per frame.
    """
    sig = np.asarray(x, dtype=np.float64)
    width = int(_FRAME * rate)
    hop = int(_HOP * rate)
    tau_min = int(rate / F0_MAX)
    tau_max = int(rate / F0_MIN)
    span = width + tau_max
    if len(sig) < span + hop:
        return np.zeros(0), np.zeros(0, dtype=bool)
    frames = sliding_window_view(sig, span)[::hop]
    nfft = 1 << int(np.ceil(np.log2(span + width)))
    head = np.fft.rfft(frames[:, :width], nfft)
    whole = np.fft.rfft(frames, nfft)
    corr = np.fft.irfft(np.conj(head) * whole, nfft)[:, : tau_max + 1]  # r[tau] = sum_j x_j x_{j+tau}
    sq = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames * frames, axis=1)], axis=1)
    taus = np.arange(tau_max + 1)
    energy_tau = sq[:, taus + width] - sq[:, taus]
    diff = energy_tau[:, :1] + energy_tau - 2.0 * corr
    diff[:, 0] = 0.0
    np.maximum(diff, 0.0, out=diff)
    cum = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * taus[1:] / np.maximum(cum, 1e-12)
    below = cmnd < _YIN_THRESHOLD
    below[:, :tau_min] = False
    voiced = below.any(axis=1)
    first = np.argmax(below, axis=1)
    # Walk down to the local minimum that follows the first dip under the threshold.
    rows = np.arange(len(frames))
    tau = first.copy()
    for _ in range(tau_max):
        nxt = np.minimum(tau + 1, tau_max)
        step = voiced & (cmnd[rows, nxt] < cmnd[rows, tau]) & (tau < tau_max)
        if not step.any():
            break
        tau = np.where(step, nxt, tau)
    # Parabolic interpolation around the minimum for sub-sample lag.
    left = cmnd[rows, np.maximum(tau - 1, 0)]
    mid = cmnd[rows, tau]
    right = cmnd[rows, np.minimum(tau + 1, tau_max)]
    denom = left - 2 * mid + right
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    lag = tau + np.clip(shift, -0.5, 0.5)
    loud = _frame_rms_db(sig, rate)
    n = min(len(loud) if len(loud) else len(frames), len(frames))
    level = np.full(len(frames), -120.0)
    level[:n] = loud[:n]
    ref = np.percentile(level, 95) if len(level) else 0.0
    voiced &= level > ref - _ACTIVE_DB
    f0 = np.where(voiced, rate / np.maximum(lag, 1.0), np.nan)
    return f0, voiced


def articulation_seconds(x: npt.ArrayLike, rate: int = ANALYSIS_RATE) -> float:
    """Seconds of speech, pauses excluded: 10 ms frames within 30 dB of the loud frames.

    Dividing syllables by this (not by the file's length) gives an articulation rate that does not depend on how
    long the speaker paused or how much silence the recording has at its ends.
    """
    db = _frame_rms_db(np.asarray(x, dtype=np.float64), rate)
    if len(db) == 0:
        return 0.0
    ref = np.percentile(db, 95)
    return float(np.count_nonzero(db > ref - 30.0)) * _HOP


def envelope_syllables(x: npt.ArrayLike, rate: int = ANALYSIS_RATE) -> int:
    """Syllable nuclei counted as prominent peaks of the 300–3000 Hz energy envelope.

    The fallback when no transcript is available: it miscounts by about ±10 %, where counting the syllables of
    a transcript is close to exact.
    """
    from scipy import signal

    sig = np.asarray(x, dtype=np.float64)
    if len(sig) < rate // 4:
        return 0
    sos = signal.butter(4, [300.0, 3000.0], btype="bandpass", fs=rate, output="sos")
    env = _frame_rms_db(signal.sosfiltfilt(sos, sig), rate)
    if len(env) < 5:
        return 0
    smooth = np.convolve(env, np.ones(5) / 5.0, mode="same")
    active = smooth > np.percentile(smooth, 95) - 25.0
    peaks, _ = signal.find_peaks(smooth, prominence=3.0, distance=7)
    return int(np.count_nonzero(active[peaks]))


_VOWEL_GROUP = re.compile(r"[aeiouy]+")
_NUMBER_WORDS = {"0": 2, "1": 1, "2": 1, "3": 1, "4": 1, "5": 1, "6": 1, "7": 2, "8": 1, "9": 1}


def count_syllables(text: str) -> int:
    """English syllables by vowel groups (silent final e, at least one per word; digits spoken one by one)."""
    total = 0
    for word in re.findall(r"[a-z']+|[0-9]", text.lower()):
        if word in _NUMBER_WORDS:
            total += _NUMBER_WORDS[word]
            continue
        groups = len(_VOWEL_GROUP.findall(word))
        if word.endswith("e") and not word.endswith(("le", "ee", "ye")) and groups > 1:
            groups -= 1
        total += max(1, groups)
    return total


def median_f0(x: npt.ArrayLike, rate: int = ANALYSIS_RATE) -> tuple[float, float]:
    """(median F0 in Hz, seconds of voiced speech)."""
    f0, voiced = f0_track(x, rate)
    seconds = float(voiced.sum()) * _HOP
    return (float(np.nanmedian(f0)) if seconds > 0 else float("nan")), seconds


def prepare(audio: npt.ArrayLike, rate: int) -> npt.NDArray[np.float32]:
    """Mono float audio at any rate → peak-normalised 16 kHz, the form every measurement here expects."""
    x = np.asarray(audio, dtype=np.float32)
    if rate != ANALYSIS_RATE:
        from telebridge.audio.resample import resample_once

        x = np.asarray(resample_once(x, rate, ANALYSIS_RATE), dtype=np.float32)
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak < 1e-3:
        raise NotEnoughSpeech("the audio is silent")
    return x / peak


def measure(audio16k: npt.ArrayLike, transcript: str | None = None) -> VoiceProfile:
    """Pitch and articulation rate of prepared 16 kHz audio; syllables from ``transcript`` when given."""
    f0, voiced_seconds = median_f0(audio16k)
    if voiced_seconds < MIN_VOICED_SECONDS:
        raise NotEnoughSpeech(
            f"only {voiced_seconds:.2f} s of voiced speech found; at least {MIN_VOICED_SECONDS} s is needed"
        )
    speech = articulation_seconds(audio16k)
    syllables = count_syllables(transcript) if transcript and transcript.strip() else envelope_syllables(audio16k)
    if syllables <= 0 or speech <= 0:
        raise NotEnoughSpeech("no syllables found in the audio")
    return VoiceProfile(f0_hz=f0, syllable_rate=syllables / speech, speech_seconds=speech, voiced_seconds=voiced_seconds)
