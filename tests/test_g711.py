"""G.711 μ-law/A-law: bit-exact against independent scalar references and stdlib audioop."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telebridge.audio.g711 import (
    ALAW_DECODE_TABLE,
    alaw_decode,
    ulaw_decode,
    ulaw_decode_float,
    ulaw_encode,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)

# --- Independent scalar references: the classic Sun Microsystems g711.c -----------------

BIAS = 0x84
CLIP = 32635
SEG_END = (0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF)


def ref_linear2ulaw(pcm_val: int) -> int:
    """Sun linear2ulaw (16-bit two's complement in), written as plain scalar code."""
    if pcm_val < 0:
        pcm_val = -pcm_val
        mask = 0x7F
    else:
        mask = 0xFF
    if pcm_val > CLIP:
        pcm_val = CLIP
    pcm_val += BIAS
    seg = 0
    while seg < 8 and pcm_val > SEG_END[seg]:
        seg += 1
    if seg >= 8:
        return 0x7F ^ mask
    uval = (seg << 4) | ((pcm_val >> (seg + 3)) & 0xF)
    return uval ^ mask


def ref_ulaw2linear(u_val: int) -> int:
    """Sun ulaw2linear."""
    u_val = ~u_val & 0xFF
    t = ((u_val & 0x0F) << 3) + BIAS
    t <<= (u_val & 0x70) >> 4
    return BIAS - t if u_val & 0x80 else t - BIAS


def ref_alaw2linear(a_val: int) -> int:
    """Sun alaw2linear."""
    a_val ^= 0x55
    t = (a_val & 0x0F) << 4
    seg = (a_val & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t += 0x108
        t <<= seg - 1
    return t if a_val & 0x80 else -t


def g191_linear2ulaw(x: int) -> int:
    """ITU-T G.191 STL ulaw_compress (ones' complement magnitude for negatives)."""
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high = 0x8 - segno
    low = 0xF - ((absno >> segno) & 0xF)
    out = (high << 4) | low
    return out | 0x80 if x >= 0 else out


@pytest.fixture(scope="module")
def ref_encoded() -> np.ndarray:
    return np.array([ref_linear2ulaw(int(v)) for v in ALL_INT16], dtype=np.uint8)


# --- decode ------------------------------------------------------------------------------


def test_decode_all_256_codes_match_reference_and_audioop() -> None:
    ours = ulaw_decode(ALL_CODES)
    assert ours.dtype == np.int16 and ours.shape == (256,)
    ref = np.array([ref_ulaw2linear(c) for c in range(256)], dtype=np.int16)
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(ours, np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), "<i2"))


def test_decode_known_anchor_values() -> None:
    # Published G.711 μ-law anchors: 0xFF/0x7F = ±0, 0x80 = +32124, 0x00 = -32124.
    assert ulaw_decode(b"\xff\x7f\x80\x00").tolist() == [0, 0, 32124, -32124]
    assert ulaw_decode(b"\xfe\x7e").tolist() == [8, -8]


def test_decode_float_is_int16_over_32768() -> None:
    f = ulaw_decode_float(ALL_CODES)
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f, ulaw_decode(ALL_CODES).astype(np.float32) / 32768.0)
    assert np.abs(f).max() < 1.0


def test_decode_accepts_bytearray_and_memoryview_and_empty() -> None:
    frame = bytes(range(0, 256, 2))
    expected = ulaw_decode(frame)
    np.testing.assert_array_equal(ulaw_decode(bytearray(frame)), expected)
    np.testing.assert_array_equal(ulaw_decode(memoryview(frame)), expected)
    assert ulaw_decode(b"").shape == (0,)
    assert ulaw_encode(np.zeros(0, dtype=np.int16)) == b""


# --- encode ------------------------------------------------------------------------------


def test_encode_all_65536_int16_match_sun_reference(ref_encoded: np.ndarray) -> None:
    ours = np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8)
    np.testing.assert_array_equal(ours, ref_encoded)


def test_encode_matches_audioop_exactly_for_non_negative_inputs() -> None:
    ours = np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8)
    theirs = np.frombuffer(audioop.lin2ulaw(ALL_INT16.tobytes(), 2), dtype=np.uint8)
    nonneg = ALL_INT16 >= 0
    np.testing.assert_array_equal(ours[nonneg], theirs[nonneg])


def test_encode_negative_inputs_differ_from_audioop_only_by_its_14bit_rounding() -> None:
    """audioop truncates a negative sample to 14 bits as -(x >> 2), i.e. it rounds the
    magnitude *up*; Sun's code rounds it down.  Mapping each negative x to the sample with
    audioop's magnitude, -4*ceil(|x|/4), must make the two agree on every input."""
    x = ALL_INT16.astype(np.int32)
    theirs = np.frombuffer(audioop.lin2ulaw(ALL_INT16.tobytes(), 2), dtype=np.uint8)
    neg = x < 0
    mapped = np.maximum(-4 * ((-x[neg] + 3) // 4), -32768).astype(np.int16)
    ours_mapped = np.frombuffer(ulaw_encode(mapped), dtype=np.uint8)
    np.testing.assert_array_equal(ours_mapped, theirs[neg])
    # ...and the direct disagreements are exactly one quantisation step, 3 per threshold.
    ours = np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8)
    diff = ours.astype(int) - theirs.astype(int)
    assert set(np.unique(diff).tolist()) == {0, 1}
    assert int((diff != 0).sum()) == 127 * 3


def test_encode_relation_to_itu_g191_reference() -> None:
    """G.191 (ITU software tools) uses a ones' complement for negatives, i.e. magnitude
    (|x|-1) >> 2.  Positive inputs agree exactly; negatives agree after that mapping."""
    x = ALL_INT16.astype(np.int32)
    g191 = np.array([g191_linear2ulaw(int(v)) for v in x], dtype=np.uint8)
    ours = np.frombuffer(ulaw_encode(ALL_INT16), dtype=np.uint8)
    nonneg = x >= 0
    np.testing.assert_array_equal(ours[nonneg], g191[nonneg])
    neg = ~nonneg
    mapped = (-4 * ((-x[neg] - 1) // 4)).astype(np.int16)
    ours_mapped = np.frombuffer(ulaw_encode(mapped), np.uint8).copy()
    # x = -1..-4 map to magnitude 0, which G.191 encodes as negative zero (0x7F).
    ours_mapped[mapped == 0] &= 0x7F
    np.testing.assert_array_equal(ours_mapped, g191[neg])


def test_encode_is_odd_symmetric() -> None:
    pos = np.arange(1, 32768, dtype=np.int16)
    enc_pos = np.frombuffer(ulaw_encode(pos), np.uint8)
    enc_neg = np.frombuffer(ulaw_encode(-pos), np.uint8)
    np.testing.assert_array_equal(enc_neg, enc_pos & 0x7F)


def test_encode_is_monotonic_in_decoded_value() -> None:
    decoded = ulaw_decode(ulaw_encode(ALL_INT16)).astype(np.int32)
    assert np.all(np.diff(decoded) >= 0)
    # Quantisation error bounded by half the largest step (1024) plus clipping at 32124.
    err = np.abs(decoded - ALL_INT16.astype(np.int32))
    inside = np.abs(ALL_INT16.astype(np.int32)) <= 32124
    assert err[inside].max() <= 512 + 132


def test_round_trip_decode_encode_decode_is_stable() -> None:
    once = ulaw_decode(ALL_CODES)
    again = ulaw_decode(ulaw_encode(once))
    np.testing.assert_array_equal(again, once)
    # Every code except negative zero (0x7F, which decodes to 0 = +0's value) round-trips.
    codes = np.frombuffer(ulaw_encode(once), np.uint8)
    expected = np.arange(256, dtype=np.uint8)
    expected[0x7F] = 0xFF
    np.testing.assert_array_equal(codes, expected)


def test_encode_float_scales_rounds_and_clips() -> None:
    pcm = ALL_INT16[::7]
    as_float = pcm.astype(np.float64) / 32768.0
    assert ulaw_encode(as_float) == ulaw_encode(pcm)
    assert ulaw_encode(as_float.astype(np.float32)) == ulaw_encode(pcm)
    over = np.array([1.0, 1.5, -1.0, -7.0, 0.4 / 32768, 0.6 / 32768], dtype=np.float32)
    expected = ulaw_encode(np.array([32767, 32767, -32768, -32768, 0, 1], dtype=np.int16))
    assert ulaw_encode(over) == expected


def test_encode_rejects_non_pcm_dtypes() -> None:
    with pytest.raises(TypeError):
        ulaw_encode(np.zeros(4, dtype=np.int32))  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_round_trip_property_on_random_frames(frame: bytes) -> None:
    decoded = ulaw_decode(frame)
    assert ulaw_decode(ulaw_encode(decoded)).tobytes() == decoded.tobytes()
    np.testing.assert_array_equal(
        ulaw_decode_float(ulaw_encode(ulaw_decode_float(frame))), ulaw_decode_float(frame)
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-32768, 32767), min_size=0, max_size=200))
def test_encode_matches_reference_on_random_sequences(values: list[int]) -> None:
    ours = ulaw_encode(np.array(values, dtype=np.int16))
    assert ours == bytes(ref_linear2ulaw(v) for v in values)


# --- A-law (decode only; used for A-law WAV files) ----------------------------------------


def test_alaw_decode_all_codes_match_reference_and_audioop() -> None:
    ours = alaw_decode(ALL_CODES)
    ref = np.array([ref_alaw2linear(c) for c in range(256)], dtype=np.int16)
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(ours, np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), "<i2"))
    np.testing.assert_array_equal(ALAW_DECODE_TABLE, ours)
    # A-law anchors: 0xD5 = +8, 0x55 = -8, 0xAA = +32256, 0x2A = -32256.
    assert alaw_decode(b"\xd5\x55\xaa\x2a").tolist() == [8, -8, 32256, -32256]


def test_tables_are_read_only() -> None:
    from telebridge.audio import g711

    with pytest.raises(ValueError):
        g711.ULAW_ENCODE_TABLE[0] = 1
    with pytest.raises(ValueError):
        g711.ULAW_DECODE_TABLE[0] = 1
