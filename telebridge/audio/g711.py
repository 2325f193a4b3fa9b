"""G.711 μ-law (and A-law decode) codecs, bit-exact and table driven.

Twilio Media Streams carry 8 kHz μ-law in 20 ms frames (160 bytes), both ways, for every
call.  Encoding and decoding therefore sit on the hottest path of the service, so both
directions are a single numpy fancy-index into a precomputed table:

* decode: a 256-entry table indexed by the code byte;
* encode: a 65,536-entry table indexed by the int16 sample reinterpreted as uint16.

The tables are built once at import time by a *vectorised* transcription of the classic
Sun Microsystems ``g711.c`` (``BIAS = 0x84``, ``CLIP = 32635``), which implements the
ITU-T G.711 segment/quantiser tables on 16-bit two's-complement input.

A note on negative inputs: G.711 itself quantises 14-bit *sign-magnitude* values, so how a
16-bit two's-complement sample is truncated to 14 bits is an implementation choice.  Sun's
code (used here) truncates the magnitude towards zero, which makes the encoder exactly
odd-symmetric (``encode(-x) == encode(x) & 0x7F``) and free of DC bias.  CPython's
``audioop`` rounds negative magnitudes up instead and ITU-T G.191's ``g711.c`` uses a
ones' complement; all three agree on every non-negative sample and differ only for
negative samples within 3 LSBs of a decision threshold, by one quantisation step.  The
tests pin down that exact relationship.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from telebridge.audio.pcm import to_int16

__all__ = [
    "ULAW_DECODE_TABLE",
    "ULAW_ENCODE_TABLE",
    "ALAW_DECODE_TABLE",
    "ulaw_decode",
    "ulaw_decode_float",
    "ulaw_encode",
    "alaw_decode",
]

_BIAS: Final = 0x84
_CLIP: Final = 32635
_SEG_END: Final = np.array([0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF], dtype=np.int32)


def _build_ulaw_decode_table() -> npt.NDArray[np.int16]:
    """Sun ``ulaw2linear`` for all 256 codes (vectorised)."""
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = ((u & 0x0F) << 3) + _BIAS
    t <<= (u & 0x70) >> 4
    out = np.where(u & 0x80, _BIAS - t, t - _BIAS)
    return out.astype(np.int16)


def _build_ulaw_encode_table() -> npt.NDArray[np.uint8]:
    """Sun ``linear2ulaw`` for every int16, laid out by the sample's uint16 bit pattern."""
    pcm = np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32)
    negative = pcm < 0
    mag = np.minimum(np.abs(pcm), _CLIP) + _BIAS  # 132 .. 32767
    # Sun's ``search``: first segment whose end is >= the biased magnitude.
    seg = np.searchsorted(_SEG_END, mag, side="left").astype(np.int32)
    mantissa = (mag >> (seg + 3)) & 0x0F
    code = ~((seg << 4) | mantissa) & 0xFF
    code = np.where(negative, code & 0x7F, code)
    return code.astype(np.uint8)


def _build_alaw_decode_table() -> npt.NDArray[np.int16]:
    """Sun ``alaw2linear`` for all 256 codes (vectorised)."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    out = np.where(a & 0x80, t, -t)
    return out.astype(np.int16)


ULAW_DECODE_TABLE: Final[npt.NDArray[np.int16]] = _build_ulaw_decode_table()
ULAW_DECODE_TABLE.setflags(write=False)
_ULAW_DECODE_FLOAT: Final[npt.NDArray[np.float32]] = (
    ULAW_DECODE_TABLE.astype(np.float32) / np.float32(32768.0)
)
_ULAW_DECODE_FLOAT.setflags(write=False)
ULAW_ENCODE_TABLE: Final[npt.NDArray[np.uint8]] = _build_ulaw_encode_table()
ULAW_ENCODE_TABLE.setflags(write=False)
ALAW_DECODE_TABLE: Final[npt.NDArray[np.int16]] = _build_alaw_decode_table()
ALAW_DECODE_TABLE.setflags(write=False)


def _codes(data: bytes | bytearray | memoryview) -> npt.NDArray[np.uint8]:
    return np.frombuffer(data, dtype=np.uint8)


def ulaw_decode(data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """Decode μ-law bytes to int16 PCM (one sample per byte)."""
    return ULAW_DECODE_TABLE[_codes(data)]


def ulaw_decode_float(data: bytes | bytearray | memoryview) -> npt.NDArray[np.float32]:
    """Decode μ-law bytes straight to float32 in [-1, 1) (= int16 / 32768)."""
    return _ULAW_DECODE_FLOAT[_codes(data)]


def ulaw_encode(pcm: npt.NDArray[np.int16] | npt.NDArray[np.floating]) -> bytes:
    """Encode PCM to μ-law bytes.

    ``pcm`` is int16, or float32/float64 in [-1, 1] which is scaled by 32768, rounded
    half-to-even and clipped to the int16 range (so 1.0 encodes like 32767).
    """
    arr = np.asarray(pcm)
    if arr.dtype != np.int16 and arr.dtype.kind != "f":
        raise TypeError(f"ulaw_encode expects int16 or float samples, got {arr.dtype}")
    samples = to_int16(arr)
    if samples.ndim != 1:
        samples = samples.reshape(-1)
    return ULAW_ENCODE_TABLE[np.ascontiguousarray(samples).view(np.uint16)].tobytes()


def alaw_decode(data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """Decode A-law bytes to int16 PCM (used for A-law WAV files)."""
    return ALAW_DECODE_TABLE[_codes(data)]
