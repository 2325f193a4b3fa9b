"""Minimal, strict-where-it-matters WAV reader and 16-bit PCM writer.

Why not the stdlib ``wave`` module: it rejects IEEE-float, μ-law/A-law and most
WAVE_FORMAT_EXTENSIBLE files, which are exactly what TTS engines, test fixtures and
telephony recordings produce.  This module walks the RIFF chunks itself and returns what
the rest of telebridge wants: float32 mono plus the sample rate.

Tolerances (real-world files): odd-sized chunks with or without their pad byte, a RIFF
size that disagrees with the file, ``RF64`` magic, and a data chunk whose size is 0 or
0xFFFFFFFF (written by streaming encoders before the length is known) or larger than the
file — in those cases the samples run to the end of the file, cut to whole frames.
Everything else that is wrong raises :class:`WavError` naming the problem.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt

from telebridge.audio.g711 import ALAW_DECODE_TABLE, ulaw_decode_float
from telebridge.audio.pcm import to_int16

__all__ = ["WavError", "read_wav", "write_wav", "wav_bytes"]

WAVE_FORMAT_PCM: Final = 0x0001
WAVE_FORMAT_IEEE_FLOAT: Final = 0x0003
WAVE_FORMAT_ALAW: Final = 0x0006
WAVE_FORMAT_MULAW: Final = 0x0007
WAVE_FORMAT_EXTENSIBLE: Final = 0xFFFE
# KSDATAFORMAT_SUBTYPE_* GUIDs are the format tag followed by this fixed suffix.
_GUID_SUFFIX: Final = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_STREAMING_SIZES: Final = (0, 0xFFFFFFFF)

_FORMAT_NAMES: Final = {
    WAVE_FORMAT_PCM: "PCM",
    WAVE_FORMAT_IEEE_FLOAT: "IEEE float",
    WAVE_FORMAT_ALAW: "A-law",
    WAVE_FORMAT_MULAW: "mu-law",
}
_SUPPORTED_BITS: Final = {
    WAVE_FORMAT_PCM: (8, 16, 24, 32),
    WAVE_FORMAT_IEEE_FLOAT: (32, 64),
    WAVE_FORMAT_ALAW: (8,),
    WAVE_FORMAT_MULAW: (8,),
}


class WavError(ValueError):
    """The input is not a WAV file this reader supports; the message says why."""


def _load(source: str | Path | bytes | bytearray | memoryview | BinaryIO) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, Path)):
        return Path(source).read_bytes()
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("read_wav: file object must be opened in binary mode")
        return bytes(data)
    raise TypeError(f"read_wav: unsupported source type {type(source).__name__}")


def _is_chunk_id(raw: bytes) -> bool:
    return len(raw) == 4 and all(0x20 <= b <= 0x7E for b in raw)


class _Format:
    __slots__ = ("tag", "channels", "rate", "block_align", "bits")

    def __init__(self, body: bytes) -> None:
        if len(body) < 16:
            raise WavError(f"fmt chunk is {len(body)} bytes; at least 16 are required")
        tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
        if tag == WAVE_FORMAT_EXTENSIBLE:
            if len(body) < 40:
                raise WavError("WAVE_FORMAT_EXTENSIBLE fmt chunk is shorter than 40 bytes")
            valid_bits = struct.unpack_from("<H", body, 18)[0]
            guid = body[24:40]
            if guid[2:] != _GUID_SUFFIX:
                raise WavError(f"unsupported WAVE_FORMAT_EXTENSIBLE sub-format {guid.hex()}")
            tag = struct.unpack_from("<H", guid)[0]
            if valid_bits > bits:
                raise WavError(f"valid bits ({valid_bits}) exceed container bits ({bits})")
        if tag not in _FORMAT_NAMES:
            raise WavError(f"unsupported WAV format tag 0x{tag:04X} (only PCM, IEEE float, "
                           "mu-law, A-law and their EXTENSIBLE forms are supported)")
        if channels == 0:
            raise WavError("WAV header declares zero channels")
        if rate == 0:
            raise WavError("WAV header declares a sample rate of 0")
        if bits not in _SUPPORTED_BITS[tag]:
            raise WavError(f"unsupported {_FORMAT_NAMES[tag]} sample size: {bits} bits "
                           f"(supported: {_SUPPORTED_BITS[tag]})")
        if block_align != channels * (bits // 8):
            raise WavError(f"block align {block_align} does not match {channels} channel(s) "
                           f"of {bits}-bit samples")
        self.tag, self.channels, self.rate = tag, channels, rate
        self.block_align, self.bits = block_align, bits


def _decode(fmt: _Format, payload: bytes) -> npt.NDArray[np.float32]:
    """Interleaved sample bytes → float32 in [-1, 1], shape (frames * channels,)."""
    if fmt.tag == WAVE_FORMAT_MULAW:
        return ulaw_decode_float(payload)
    if fmt.tag == WAVE_FORMAT_ALAW:
        table = ALAW_DECODE_TABLE.astype(np.float32) / np.float32(32768.0)
        return table[np.frombuffer(payload, dtype=np.uint8)]
    if fmt.tag == WAVE_FORMAT_IEEE_FLOAT:
        dtype = "<f4" if fmt.bits == 32 else "<f8"
        return np.frombuffer(payload, dtype=dtype).astype(np.float32)
    if fmt.bits == 8:  # 8-bit WAV PCM is unsigned, centred on 128
        u8 = np.frombuffer(payload, dtype=np.uint8)
        return (u8.astype(np.float32) - 128.0) / 128.0
    if fmt.bits == 16:
        return np.frombuffer(payload, dtype="<i2").astype(np.float32) / np.float32(32768.0)
    if fmt.bits == 24:
        b = np.frombuffer(payload, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return (v.astype(np.float64) / float(1 << 23)).astype(np.float32)
    i32 = np.frombuffer(payload, dtype="<i4")
    return (i32.astype(np.float64) / float(1 << 31)).astype(np.float32)


def read_wav(
    source: str | Path | bytes | bytearray | memoryview | BinaryIO,
) -> tuple[npt.NDArray[np.float32], int]:
    """Read a WAV file as float32 mono (channels averaged) and its sample rate."""
    data = _load(source)
    if len(data) < 12:
        raise WavError(f"not a WAV file: only {len(data)} bytes, a RIFF header needs 12")
    magic, _riff_size, wave_id = struct.unpack_from("<4sI4s", data)
    if magic not in (b"RIFF", b"RF64"):
        raise WavError(f"not a WAV file: starts with {data[:4]!r}, expected b'RIFF'")
    if wave_id != b"WAVE":
        raise WavError(f"RIFF file of type {wave_id!r}, not b'WAVE'")

    fmt: _Format | None = None
    payload: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, pos)
        body_start = pos + 8
        if chunk_id == b"data":
            if fmt is None:
                raise WavError("data chunk appears before the fmt chunk")
            end = len(data) if size in _STREAMING_SIZES else min(body_start + size, len(data))
            payload = data[body_start:end]
            break
        if body_start + size > len(data):
            raise WavError(f"truncated WAV: {chunk_id!r} chunk declares {size} bytes, "
                           f"{len(data) - body_start} remain")
        if chunk_id == b"fmt ":
            fmt = _Format(data[body_start : body_start + size])
        pos = body_start + size
        if size & 1:
            # RIFF pads odd chunks to even length, but some writers omit the pad byte.
            unpadded_ok = _is_chunk_id(data[pos : pos + 4])
            padded_ok = _is_chunk_id(data[pos + 1 : pos + 5])
            if padded_ok or not unpadded_ok:
                pos += 1
    if fmt is None:
        raise WavError("truncated or malformed WAV: no fmt chunk found")
    if payload is None:
        raise WavError("truncated or malformed WAV: no data chunk found")

    usable = len(payload) - len(payload) % fmt.block_align
    samples = _decode(fmt, payload[:usable])
    if fmt.channels > 1:
        frames = samples.reshape(-1, fmt.channels)
        samples = frames.mean(axis=1, dtype=np.float64).astype(np.float32)
    return np.ascontiguousarray(samples, dtype=np.float32), fmt.rate


def wav_bytes(samples: npt.ArrayLike, sample_rate: int) -> bytes:
    """Encode mono samples (float in [-1, 1] or int16) as a 16-bit PCM WAV file."""
    arr = np.asarray(samples)
    if arr.ndim != 1:
        raise ValueError(f"wav_bytes writes mono only; got samples of shape {arr.shape}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or not 0 < sample_rate <= 0xFFFFFFFF // 2:
        raise ValueError(f"invalid sample rate {sample_rate!r}")
    pcm = to_int16(arr).astype("<i2").tobytes()
    if len(pcm) > 0xFFFFFFFF - 36:
        raise ValueError("too many samples for a RIFF WAV file")
    rate = int(sample_rate)
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + len(pcm), b"WAVE",
        b"fmt ", 16, WAVE_FORMAT_PCM, 1, rate, rate * 2, 2, 16,
        b"data", len(pcm),
    )
    return header + pcm


def write_wav(dest: str | Path | BinaryIO, samples: npt.ArrayLike, sample_rate: int) -> None:
    """Write mono samples as a 16-bit PCM WAV to a path or a binary file object."""
    blob = wav_bytes(samples, sample_rate)
    if isinstance(dest, (str, Path)):
        Path(dest).write_bytes(blob)
    elif hasattr(dest, "write"):
        dest.write(blob)
    else:
        raise TypeError(f"write_wav: unsupported destination type {type(dest).__name__}")
