"""Turning an uploaded voice sample into samples: WAV by our own reader, everything else through PyAV (FFmpeg).

PyAV comes with faster-whisper (the embedded STT), so MP3, Ogg/Vorbis, Ogg/Opus, FLAC, M4A/AAC and WebM from a
browser's MediaRecorder all decode without another dependency. Only the first ``max_seconds`` are decoded:
cloning needs a few seconds of speech, and a bound keeps a hostile file from costing minutes of CPU.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt

from telebridge.audio.wav import WavError, read_wav

DECODE_RATE = 16000


class UnsupportedAudio(ValueError):
    """Not audio in any format we can decode (HTTP 415)."""


class UnusableAudio(ValueError):
    """Decodable audio, but not usable as a voice sample: too short, silent, no audio stream (HTTP 422)."""


def decode_audio(data: bytes, *, max_seconds: float = 15.0) -> tuple[npt.NDArray[np.float32], int]:
    """Mono float32 samples and their rate; raises :class:`UnsupportedAudio` or :class:`UnusableAudio`."""
    if not data:
        raise UnusableAudio("the file is empty")
    if data[:4] in (b"RIFF", b"RF64"):
        try:
            audio, rate = read_wav(data)
        except WavError as exc:
            raise UnsupportedAudio(f"not a WAV file we can read: {exc}") from exc
        return audio[: int(max_seconds * rate)], rate
    return _decode_with_av(data, max_seconds)


def _decode_with_av(data: bytes, max_seconds: float) -> tuple[npt.NDArray[np.float32], int]:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av ships with faster-whisper
        raise UnsupportedAudio("only WAV uploads are supported in this build (PyAV is not installed)") from exc
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception as exc:  # av raises a zoo of FFmpeg errors for non-media input
        raise UnsupportedAudio("not an audio file we can decode (WAV, MP3, Ogg, FLAC, M4A, WebM, …)") from exc
    with container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise UnusableAudio("the file has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=DECODE_RATE)
        limit = int(max_seconds * DECODE_RATE)
        pieces: list[npt.NDArray[np.float32]] = []
        total = 0
        try:
            for frame in container.decode(streams[0]):
                for out in resampler.resample(frame):
                    pcm = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                    pieces.append(pcm)
                    total += len(pcm)
                if total >= limit:
                    break
            else:
                for out in resampler.resample(None):
                    pieces.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        except Exception as exc:
            if not pieces:
                raise UnsupportedAudio(f"the audio stream cannot be decoded: {exc}") from exc
            # A truncated file: use what decoded.
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return audio[:limit], DECODE_RATE
