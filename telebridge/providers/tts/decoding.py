"""Provider audio → int16 mono: the formats cloud TTS answers in.

* Raw G.711 (μ-law, A-law) and 16-bit little-endian PCM, as a stream of chunks split anywhere: a PCM chunk may
  end mid-sample, so :class:`RawDecoder` keeps the odd byte for the next chunk.
* MP3 as a stream (:class:`Mp3StreamDecoder`): frames are decoded as they complete; an ID3 tag or a broken frame
  is skipped, as players do.
* Any compressed file PyAV reads (mp3, opus, aac, flac), whole: :func:`decode_compressed`.

PyAV is imported only when compressed audio is asked for.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from telebridge.audio.g711 import alaw_decode, ulaw_decode
from telebridge.providers.errors import ProviderError

__all__ = ["RawDecoder", "Mp3StreamDecoder", "decode_compressed", "pcm16"]

def pcm16(data: bytes) -> np.ndarray:
    """Little-endian 16-bit PCM → int16 (a trailing odd byte is dropped)."""
    return np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2").astype(np.int16)


class RawDecoder:
    """Chunks of ``"mulaw"``, ``"alaw"`` or 16-bit ``"pcm"`` bytes → int16, chunk by chunk."""

    def __init__(self, encoding: str) -> None:
        if encoding not in ("mulaw", "alaw", "pcm"):
            raise ValueError(f"not a raw encoding: {encoding!r}")
        self.encoding = encoding
        self.carry = b""  # the odd trailing byte of a PCM chunk, completed by the next one

    def feed(self, data: bytes) -> np.ndarray:
        if self.encoding == "mulaw":
            return ulaw_decode(data)
        if self.encoding == "alaw":
            return alaw_decode(data)
        data = self.carry + data
        cut = len(data) - len(data) % 2
        self.carry = data[cut:]
        return np.frombuffer(data[:cut], dtype="<i2").astype(np.int16)

    def flush(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int16)


class Mp3StreamDecoder:
    """MP3 bytes as they arrive → int16 mono at ``rate``. Failures are :class:`ProviderError` of ``provider``."""

    def __init__(self, provider: str, rate: int) -> None:
        import av

        self.provider = provider
        self._bad = self._good = 0
        self._codec: Any = av.CodecContext.create("mp3", "r")
        self._resampler: Any = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def feed(self, data: bytes) -> np.ndarray:
        return self._decode(data)

    def flush(self) -> np.ndarray:
        return self._decode(None)

    def _decode(self, data: bytes | None) -> np.ndarray:
        import av

        out = []
        try:
            packets = list(self._codec.parse(data)) if data is not None else [None]
        except Exception as exc:  # FFmpeg errors
            raise ProviderError(self.provider, f"undecodable mp3 audio: {exc}") from exc
        for packet in packets:
            try:
                frames = self._codec.decode(packet)
            except av.error.InvalidDataError:  # an ID3 tag or a broken frame: skip it, as players do
                self._bad += 1
                if self._bad > 8 and not self._good:
                    raise ProviderError(self.provider, "undecodable mp3 audio") from None
                continue
            for frame in frames:
                self._good += 1
                for res in self._resampler.resample(frame):
                    out.append(res.to_ndarray().reshape(-1))
        return np.concatenate(out).astype(np.int16) if out else np.zeros(0, dtype=np.int16)


def decode_compressed(data: bytes, rate: int) -> np.ndarray:
    """A whole mp3/opus/aac/flac file → int16 mono at ``rate`` (PyAV; its errors propagate). Blocking: run it in a
    worker thread."""
    import av

    out: list[np.ndarray] = []
    with av.open(io.BytesIO(data), mode="r") as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for frame in container.decode(audio=0):
            out.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        out.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(out).astype(np.int16) if out else np.zeros(0, dtype=np.int16)
