"""WAV reader/writer: every supported encoding round-trips; malformed input fails clearly."""

from __future__ import annotations

import io
import struct
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest

from telebridge.audio.g711 import ulaw_encode
from telebridge.audio.wav import WavError, read_wav, wav_bytes, write_wav

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

GUID_SUFFIX = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def build_wav(
    tag: int,
    channels: int,
    rate: int,
    bits: int,
    payload: bytes,
    *,
    extensible: bool = False,
    data_size: int | None = None,
    pre_chunks: tuple[tuple[bytes, bytes], ...] = (),
    pad_odd: bool = True,
    riff_magic: bytes = b"RIFF",
) -> bytes:
    """Independent header builder so the reader is not only tested against its own writer."""
    block_align = channels * bits // 8
    if extensible:
        fmt = struct.pack(
            "<HHIIHHHHI16s", 0xFFFE, channels, rate, rate * block_align, block_align, bits,
            22, bits, 0x3 if channels == 2 else 0, struct.pack("<H", tag) + GUID_SUFFIX,
        )
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block_align, block_align, bits)
        if tag != 1:
            fmt += b"\x00\x00"  # cbSize, as non-PCM writers emit it
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    for cid, content in pre_chunks:
        body += cid + struct.pack("<I", len(content)) + content
        if len(content) % 2 and pad_odd:
            body += b"\x00"
    size = len(payload) if data_size is None else data_size
    body += b"data" + struct.pack("<I", size) + payload
    return riff_magic + struct.pack("<I", len(body)) + body


RNG = np.random.default_rng(7)
PCM16 = RNG.integers(-32768, 32768, 1000).astype(np.int16)


# --- round trips ----------------------------------------------------------------------------


def test_write_then_read_16bit_round_trip(tmp_path: Path) -> None:
    x = RNG.uniform(-1, 1, 4000).astype(np.float32)
    path = tmp_path / "a.wav"
    write_wav(path, x, 16000)
    y, rate = read_wav(path)
    assert rate == 16000 and y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() <= 0.5 / 32768 + 1e-9
    # str path, bytes, BytesIO and file object all read identically
    for src in (str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        np.testing.assert_array_equal(read_wav(src)[0], y)
    with open(path, "rb") as fh:
        np.testing.assert_array_equal(read_wav(fh)[0], y)


def test_written_file_is_valid_for_stdlib_wave() -> None:
    blob = wav_bytes(PCM16, 8000)
    with wave.open(io.BytesIO(blob)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.getnframes() == PCM16.shape[0]
        np.testing.assert_array_equal(np.frombuffer(w.readframes(-1), "<i2"), PCM16)


def test_write_to_binary_file_object_and_clipping() -> None:
    buf = io.BytesIO()
    write_wav(buf, np.array([0.0, 1.0, -1.0, 2.0, -2.0, 0.5], dtype=np.float64), 22050)
    y, rate = read_wav(buf.getvalue())
    assert rate == 22050
    expected = np.array([0, 32767, -32768, 32767, -32768, 16384]) / 32768.0
    np.testing.assert_array_equal(y, expected.astype(np.float32))


def test_reads_stdlib_wave_written_stereo_and_8bit() -> None:
    stereo = np.stack([PCM16, (PCM16 // 2).astype(np.int16)], axis=1)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(stereo.astype("<i2").tobytes())
    y, rate = read_wav(buf.getvalue())
    assert rate == 44100
    expected = (stereo.astype(np.float64) / 32768.0).mean(axis=1)
    np.testing.assert_allclose(y, expected, atol=1e-7)

    u8 = np.array([0, 64, 128, 192, 255], dtype=np.uint8)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(u8.tobytes())
    y, _ = read_wav(buf.getvalue())
    np.testing.assert_array_equal(y, (u8.astype(np.float32) - 128) / 128)


@pytest.mark.parametrize("extensible", [False, True])
def test_24bit_pcm(extensible: bool) -> None:
    values = np.array([0, 1, -1, 2**23 - 1, -(2**23), 123456, -654321], dtype=np.int64)
    payload = b"".join(int(v).to_bytes(3, "little", signed=True) for v in values)
    y, rate = read_wav(build_wav(1, 1, 48000, 24, payload, extensible=extensible))
    assert rate == 48000
    np.testing.assert_array_equal(y, (values / 2.0**23).astype(np.float32))


def test_32bit_int_pcm() -> None:
    values = np.array([0, 1, -1, 2**31 - 1, -(2**31), 1 << 20], dtype=np.int64)
    payload = values.astype("<i4").tobytes()
    y, _ = read_wav(build_wav(1, 1, 16000, 32, payload))
    np.testing.assert_array_equal(y, (values / 2.0**31).astype(np.float32))


@pytest.mark.parametrize(("bits", "dtype"), [(32, "<f4"), (64, "<f8")])
@pytest.mark.parametrize("extensible", [False, True])
def test_ieee_float(bits: int, dtype: str, extensible: bool) -> None:
    x = RNG.uniform(-1, 1, 500)
    y, rate = read_wav(build_wav(3, 1, 24000, bits, x.astype(dtype).tobytes(), extensible=extensible))
    assert rate == 24000
    np.testing.assert_array_equal(y, x.astype(dtype).astype(np.float32))


@pytest.mark.parametrize("extensible", [False, True])
def test_mulaw(extensible: bool) -> None:
    codes = ulaw_encode(PCM16)
    y, rate = read_wav(build_wav(7, 1, 8000, 8, codes, extensible=extensible))
    assert rate == 8000
    expected = np.frombuffer(audioop.ulaw2lin(codes, 2), "<i2") / 32768.0
    np.testing.assert_array_equal(y, expected.astype(np.float32))


@pytest.mark.parametrize("extensible", [False, True])
def test_alaw(extensible: bool) -> None:
    codes = audioop.lin2alaw(PCM16.tobytes(), 2)
    y, _ = read_wav(build_wav(6, 1, 8000, 8, codes, extensible=extensible))
    expected = np.frombuffer(audioop.alaw2lin(codes, 2), "<i2") / 32768.0
    np.testing.assert_array_equal(y, expected.astype(np.float32))


def test_multichannel_extensible_is_averaged() -> None:
    frames = RNG.uniform(-1, 1, (300, 6)).astype("<f4")
    y, _ = read_wav(build_wav(3, 6, 48000, 32, frames.tobytes(), extensible=True))
    np.testing.assert_allclose(y, frames.astype(np.float64).mean(axis=1), atol=1e-7)


def test_stereo_mulaw_is_averaged_after_decoding() -> None:
    left, right = PCM16[:400], PCM16[400:800]
    codes = np.frombuffer(ulaw_encode(np.stack([left, right], 1).reshape(-1)), np.uint8)
    y, _ = read_wav(build_wav(7, 2, 8000, 8, codes.tobytes()))
    dec = np.frombuffer(audioop.ulaw2lin(codes.tobytes(), 2), "<i2").reshape(-1, 2) / 32768.0
    np.testing.assert_allclose(y, dec.mean(axis=1), atol=1e-7)


# --- tolerated irregularities ----------------------------------------------------------------


@pytest.mark.parametrize("pad_odd", [True, False])
def test_odd_sized_chunks_with_or_without_pad_byte(pad_odd: bool) -> None:
    payload = PCM16[:100].astype("<i2").tobytes()
    blob = build_wav(1, 1, 8000, 16, payload, pre_chunks=((b"LIST", b"abc"), (b"junk", b"12345")),
                     pad_odd=pad_odd)
    y, _ = read_wav(blob)
    np.testing.assert_array_equal(y, PCM16[:100] / np.float32(32768))


@pytest.mark.parametrize("declared", [0, 0xFFFFFFFF, 10**6])
def test_streamed_data_size_reads_to_end(declared: int) -> None:
    payload = PCM16[:321].astype("<i2").tobytes() + b"\x01"  # plus a stray half frame
    y, _ = read_wav(build_wav(1, 1, 8000, 16, payload, data_size=declared))
    np.testing.assert_array_equal(y, PCM16[:321] / np.float32(32768))


def test_rf64_magic_and_wrong_riff_size_are_tolerated() -> None:
    payload = PCM16[:50].astype("<i2").tobytes()
    blob = bytearray(build_wav(1, 1, 8000, 16, payload, riff_magic=b"RF64", data_size=0xFFFFFFFF))
    blob[4:8] = b"\xff\xff\xff\xff"
    y, _ = read_wav(bytes(blob))
    assert y.shape == (50,)


def test_empty_data_chunk_gives_empty_array() -> None:
    y, rate = read_wav(wav_bytes(np.zeros(0, dtype=np.float32), 16000))
    assert y.shape == (0,) and y.dtype == np.float32 and rate == 16000


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"", "not a WAV file"),
        (b"hello world, definitely not audio", "not a WAV file"),
        (b"RIFF\x10\x00\x00\x00AVI LIST\x00\x00\x00\x00", "not b'WAVE'"),
        (b"RIFF\x04\x00\x00\x00WAVE", "no fmt chunk"),
    ],
)
def test_garbage_is_rejected(blob: bytes, match: str) -> None:
    with pytest.raises(WavError, match=match):
        read_wav(blob)


def test_truncated_files_are_rejected() -> None:
    good = build_wav(1, 1, 8000, 16, PCM16[:10].astype("<i2").tobytes())
    with pytest.raises(WavError, match="truncated"):
        read_wav(good[:30])  # cut inside the fmt chunk
    with pytest.raises(WavError, match="no data chunk"):
        read_wav(good[:36])  # fmt complete, data header missing
    with pytest.raises(WavError):
        read_wav(good[:8])


@pytest.mark.parametrize(
    ("tag", "bits", "match"),
    [
        (2, 4, "format tag 0x0002"),  # MS ADPCM
        (0x55, 16, "format tag 0x0055"),  # MP3
        (3, 16, "IEEE float sample size: 16"),
        (7, 16, "mu-law sample size: 16"),
        (1, 40, "PCM sample size: 40"),
    ],
)
def test_unsupported_formats_are_rejected(tag: int, bits: int, match: str) -> None:
    with pytest.raises(WavError, match=match):
        read_wav(build_wav(tag, 1, 8000, bits, b"\x00" * 40))


def test_zero_channels_and_zero_rate_are_rejected() -> None:
    with pytest.raises(WavError, match="zero channels"):
        read_wav(build_wav(1, 0, 8000, 16, b"\x00" * 4))
    with pytest.raises(WavError, match="sample rate of 0"):
        read_wav(build_wav(1, 1, 0, 16, b"\x00" * 4))


def test_bad_block_align_and_unknown_extensible_guid_are_rejected() -> None:
    blob = bytearray(build_wav(1, 2, 8000, 16, b"\x00" * 8))
    struct.pack_into("<H", blob, 32, 3)  # nBlockAlign
    with pytest.raises(WavError, match="block align"):
        read_wav(bytes(blob))
    blob = bytearray(build_wav(1, 1, 8000, 16, b"\x00" * 8, extensible=True))
    blob[20 + 24 + 2 : 20 + 40] = b"\x11" * 14  # corrupt the GUID suffix
    with pytest.raises(WavError, match="sub-format"):
        read_wav(bytes(blob))


def test_wav_error_is_a_value_error() -> None:
    assert issubclass(WavError, ValueError)


def test_writer_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        wav_bytes(np.zeros((2, 10), dtype=np.float32), 8000)
    with pytest.raises(ValueError):
        wav_bytes(np.zeros(10, dtype=np.float32), 0)
    with pytest.raises(TypeError):
        wav_bytes(np.zeros(10, dtype=np.int32), 8000)


# --- PCM helpers the writer relies on (telebridge.audio.pcm) ----------------------------------


def test_pcm_conversions() -> None:
    from telebridge.audio.pcm import to_float32, to_int16

    pcm = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    f = to_float32(pcm)
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f, pcm / np.float32(32768))
    np.testing.assert_array_equal(to_int16(f), pcm)
    f32 = np.ones(4, dtype=np.float32)
    assert to_float32(f32) is f32  # no copy on the hot path
    assert to_float32(np.ones(3)).dtype == np.float32
    rounded = to_int16(np.array([0.49, 0.51, -0.51, 1.5, 2.5, 1e9, -1e9]) / 32768)
    assert rounded.tolist() == [0, 1, -1, 2, 2, 32767, -32768]
    with pytest.raises(TypeError):
        to_float32(np.zeros(3, dtype=np.int32))


def test_rms_dbfs() -> None:
    from telebridge.audio.pcm import SILENCE_DBFS, rms_dbfs

    n = np.arange(8000)
    sine = np.sin(2 * np.pi * 1000 * n / 8000)
    assert rms_dbfs(sine) == pytest.approx(-3.0103, abs=1e-3)
    assert rms_dbfs(0.1 * sine) == pytest.approx(-23.0103, abs=1e-3)
    assert rms_dbfs(np.ones(10)) == pytest.approx(0.0)
    assert rms_dbfs((sine * 16384).astype(np.int16)) == pytest.approx(-9.0309, abs=1e-3)
    assert rms_dbfs(np.zeros(100)) == SILENCE_DBFS
    assert rms_dbfs(np.zeros(0)) == SILENCE_DBFS
    with pytest.raises(ValueError):
        rms_dbfs(np.array([np.nan]))
