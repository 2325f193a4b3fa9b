"""Streaming polyphase resampler: frequency response, chunking invariance, lengths, delay."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from telebridge.audio.resample import (
    QUALITY_SPECS,
    Resampler,
    design_filter,
    resample_once,
)

PAIRS = [
    (8000, 16000),
    (16000, 8000),
    (22050, 8000),
    (24000, 8000),
    (8000, 24000),
    (16000, 24000),
    (24000, 16000),
    (44100, 8000),
    (48000, 8000),
    (16000, 16000),
]
CONVERTING = [p for p in PAIRS if p[0] != p[1]]


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    n = np.arange(int(round(rate * seconds)))
    return (amp * np.sin(2 * np.pi * freq * n / rate)).astype(np.float32)


def log_sweep(rate: int, seconds: float = 0.6) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    sweep = signal.chirp(t, 50.0, t[-1], 0.49 * rate, method="logarithmic")
    return (0.8 * np.asarray(sweep)).astype(np.float32)


def steady(y: np.ndarray, rate: int, margin_s: float = 0.04) -> np.ndarray:
    """Drop filter start-up and tail so only steady-state output is measured."""
    m = int(rate * margin_s)
    return y[m:-m]


def fit_tone(y: np.ndarray, freq: float, rate: int) -> tuple[float, float]:
    """Least-squares fit of a sinusoid at a known frequency: (amplitude, residual RMS)."""
    n = np.arange(y.shape[0])
    basis = np.stack([np.sin(2 * np.pi * freq * n / rate), np.cos(2 * np.pi * freq * n / rate)], 1)
    coef, *_ = np.linalg.lstsq(basis, y.astype(np.float64), rcond=None)
    resid = y - basis @ coef
    return float(np.hypot(*coef)), float(np.sqrt(np.mean(resid**2)))


def db(x: float) -> float:
    return 20 * math.log10(max(x, 1e-12))


def stream(r: Resampler, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    outs, i = [], 0
    for size in sizes:
        outs.append(r.process(x[i : i + size]))
        i += size
    outs.append(r.process(x[i:]))
    for o in outs:
        assert o.dtype == np.float32
    return np.concatenate(outs)


# --- frequency response -------------------------------------------------------------------


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0, 3400.0])
def test_passband_tones_keep_amplitude_within_half_db(
    in_rate: int, out_rate: int, freq: float
) -> None:
    amp = 0.5
    y = resample_once(tone(freq, in_rate, 0.25, amp), in_rate, out_rate)
    got, resid = fit_tone(steady(y, out_rate), freq, out_rate)
    assert abs(db(got / amp)) <= 0.5
    # Nothing but the tone comes out: no images/aliases/distortion above -60 dB.
    assert db(resid * math.sqrt(2) / amp) <= -60.0


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "freq"),
    [
        (24000, 8000, 6000.0),
        (24000, 8000, 9000.0),
        (22050, 8000, 5000.0),
        (22050, 8000, 7000.0),
        (16000, 8000, 5000.0),
        (16000, 8000, 7000.0),
        (16000, 8000, 4100.0),
        (44100, 8000, 5000.0),
        (48000, 8000, 9000.0),
        (24000, 16000, 9000.0),
    ],
)
def test_stopband_tones_are_rejected_by_60db(in_rate: int, out_rate: int, freq: float) -> None:
    amp = 0.9
    y = steady(resample_once(tone(freq, in_rate, 0.25, amp), in_rate, out_rate), out_rate)
    peak_equiv = float(np.sqrt(np.mean(y.astype(np.float64) ** 2))) * math.sqrt(2)
    assert db(peak_equiv / amp) <= -60.0


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (8000, 24000)])
@pytest.mark.parametrize("freq", [1000.0, 3000.0])
def test_upsampling_image_band_is_60db_down(in_rate: int, out_rate: int, freq: float) -> None:
    y = steady(resample_once(tone(freq, in_rate, 0.5, 0.5), in_rate, out_rate), out_rate)
    win = signal.windows.blackmanharris(y.shape[0])
    spec = np.abs(np.fft.rfft(y * win))
    freqs = np.fft.rfftfreq(y.shape[0], 1.0 / out_rate)
    peak = spec.max()
    assert abs(freqs[spec.argmax()] - freq) < 10
    images = spec[(freqs >= 4400.0) & (freqs <= 7600.0)]
    assert db(images.max() / peak) <= -60.0


@pytest.mark.parametrize("quality", sorted(QUALITY_SPECS))
@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (22050, 8000), (48000, 8000)])
def test_designed_response_meets_spec(in_rate: int, out_rate: int, quality: str) -> None:
    f = design_filter(in_rate, out_rate, quality)  # type: ignore[arg-type]
    spec = QUALITY_SPECS[quality]
    fs = in_rate * f.up
    w, h = signal.freqz(f.prototype / f.up, worN=1 << 17, fs=fs)
    mag = 20 * np.log10(np.maximum(np.abs(h), 1e-15))
    f_min = min(in_rate, out_rate)
    passband = mag[w <= spec.passband * f_min]
    stopband = mag[w >= spec.stopband * f_min]
    assert passband.max() - passband.min() <= 0.5
    assert np.abs(passband).max() <= 0.25
    assert stopband.max() <= -60.0
    assert stopband.max() <= -(spec.atten_db - 1.0)
    if f_min == 8000:
        assert mag[(w > 3390) & (w < 3410)].min() >= -0.5  # whole phone band is flat


# --- streaming invariance -----------------------------------------------------------------


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_20ms_chunks_equal_one_shot(in_rate: int, out_rate: int) -> None:
    x = log_sweep(in_rate)
    whole = Resampler(in_rate, out_rate).process(x)
    chunk = in_rate // 50
    chunked = stream(Resampler(in_rate, out_rate), x, [chunk] * (x.shape[0] // chunk))
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_length_is_ceil_of_n_times_ratio(in_rate: int, out_rate: int) -> None:
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    rng = np.random.default_rng(1)
    r = Resampler(in_rate, out_rate)
    total_in = total_out = 0
    for size in [0, 1, 1, 2, 3, 7, 160, 441, 0, 999, 1, 2048, 5]:
        total_out += r.process(rng.standard_normal(size).astype(np.float32)).shape[0]
        total_in += size
        assert total_out == -(-(total_in * up) // down)
        assert abs(total_out - total_in * up / down) < 1.0


@settings(max_examples=40, deadline=None)
@given(
    pair=st.sampled_from([(8000, 16000), (22050, 8000), (24000, 16000), (48000, 8000),
                          (16000, 24000), (44100, 8000)]),
    sizes=st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=25),
)
def test_random_chunking_equals_one_shot(pair: tuple[int, int], sizes: list[int]) -> None:
    in_rate, out_rate = pair
    x = log_sweep(in_rate, 0.25)[: sum(sizes) + 37]
    whole = Resampler(in_rate, out_rate).process(x)
    chunked = stream(Resampler(in_rate, out_rate), x, sizes)
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(22050, 8000), (8000, 16000), (24000, 8000)])
def test_single_sample_chunks_equal_one_shot(in_rate: int, out_rate: int) -> None:
    x = log_sweep(in_rate, 0.05)
    whole = Resampler(in_rate, out_rate).process(x)
    chunked = stream(Resampler(in_rate, out_rate), x, [1] * x.shape[0])
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (22050, 8000), (24000, 8000)])
def test_no_clicks_at_20ms_chunk_edges(in_rate: int, out_rate: int) -> None:
    x = tone(440.0, in_rate, 0.5, 0.8)
    chunk = in_rate // 50
    chunked = stream(Resampler(in_rate, out_rate), x, [chunk] * (x.shape[0] // chunk))
    whole = Resampler(in_rate, out_rate).process(x)
    step_chunked = np.abs(np.diff(chunked.astype(np.float64))).max()
    step_whole = np.abs(np.diff(whole.astype(np.float64))).max()
    assert step_chunked == pytest.approx(step_whole, abs=1e-6)
    # ...and in steady state that is the smooth sine's own slope, not a discontinuity.
    settled = steady(chunked.astype(np.float64), out_rate)
    assert np.abs(np.diff(settled)).max() <= 0.8 * 2 * np.pi * 440.0 / out_rate * 1.01


# --- delay, alignment, flush ----------------------------------------------------------------


@pytest.mark.parametrize(("in_rate", "out_rate"), CONVERTING)
def test_impulse_peaks_at_reported_delay(in_rate: int, out_rate: int) -> None:
    r = Resampler(in_rate, out_rate)
    up, down = r.ratio
    x = np.zeros(down * 10 + in_rate // 10, dtype=np.float32)
    x[down * 10] = 1.0  # lands exactly on output sample 10*L
    y = r.process(x)
    assert int(np.argmax(y)) == 10 * up + r.delay


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_resample_once_is_aligned_with_input(in_rate: int, out_rate: int) -> None:
    x = tone(1000.0, in_rate, 0.2)
    y = resample_once(x, in_rate, out_rate)
    assert y.dtype == np.float32
    assert y.shape[0] == -(-(x.shape[0] * out_rate) // in_rate)
    ideal = tone(1000.0, out_rate, y.shape[0] / out_rate)
    mid = slice(out_rate // 50, -out_rate // 50)
    np.testing.assert_allclose(y[mid], ideal[mid], atol=2e-3)
    reference = signal.resample_poly(x.astype(np.float64), out_rate, in_rate)
    np.testing.assert_allclose(y[mid], reference[mid], atol=2e-3)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_flush_emits_delay_tail_and_resets(in_rate: int, out_rate: int) -> None:
    r = Resampler(in_rate, out_rate)
    up, down = r.ratio
    x = log_sweep(in_rate, 0.05)
    head = r.process(x)
    tail = r.flush()
    assert head.shape[0] + tail.shape[0] == -(-(x.shape[0] * up) // down) + r.delay
    # After flush the stream is fresh again.
    np.testing.assert_array_equal(r.process(x), Resampler(in_rate, out_rate).process(x))


def test_reset_restores_fresh_state() -> None:
    r = Resampler(22050, 8000)
    r.process(np.ones(1234, dtype=np.float32))
    r.reset()
    x = log_sweep(22050, 0.1)
    np.testing.assert_array_equal(r.process(x), Resampler(22050, 8000).process(x))


# --- API details ------------------------------------------------------------------------------


def test_int16_input_matches_scaled_float() -> None:
    rng = np.random.default_rng(3)
    pcm = rng.integers(-20000, 20000, 800).astype(np.int16)
    for pair in [(8000, 16000), (22050, 8000), (16000, 16000)]:
        a = Resampler(*pair).process(pcm)
        b = Resampler(*pair).process(pcm.astype(np.float64) / 32768.0)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)


def test_identity_path_copies_and_has_no_delay() -> None:
    r = Resampler(16000, 16000)
    assert r.delay == 0 and r.ratio == (1, 1)
    x = log_sweep(16000, 0.02)
    y = r.process(x)
    np.testing.assert_array_equal(y, x)
    assert y is not x and not np.shares_memory(y, x)
    assert r.flush().shape == (0,)


def test_empty_chunk_returns_empty_float32() -> None:
    r = Resampler(8000, 16000)
    out = r.process(np.zeros(0, dtype=np.float32))
    assert out.dtype == np.float32 and out.shape == (0,)


def test_filter_is_designed_once_and_shared() -> None:
    a, b = Resampler(22050, 8000), Resampler(22050, 8000)
    assert a.filter is b.filter
    assert design_filter(22050, 8000) is a.filter
    assert not a.filter.prototype.flags.writeable
    assert Resampler(22050, 8000, quality="fast").filter is not a.filter


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Resampler(0, 8000)
    with pytest.raises(ValueError):
        Resampler(8000, -1)
    with pytest.raises(ValueError):
        Resampler(8000, 16000, quality="ultra")  # type: ignore[arg-type]
    r = Resampler(8000, 16000)
    with pytest.raises(ValueError):
        r.process(np.zeros((2, 160), dtype=np.float32))
    with pytest.raises(TypeError):
        r.process(np.zeros(160, dtype=np.int32))


def test_fast_quality_is_shorter_and_still_meets_60db() -> None:
    fast, default = design_filter(22050, 8000, "fast"), design_filter(22050, 8000)
    assert fast.taps < default.taps
    y = steady(resample_once(tone(5000.0, 22050, 0.25, 0.9), 22050, 8000, quality="fast"), 8000)
    assert db(float(np.sqrt(np.mean(y.astype(np.float64) ** 2))) * math.sqrt(2) / 0.9) <= -60


@pytest.mark.parametrize(
    ("in_rate", "out_rate"),
    [(11025, 8000), (8000, 11025), (44100, 48000), (96000, 8000), (32000, 48000), (8000, 44100)],
)
def test_other_ratios_stream_consistently(in_rate: int, out_rate: int) -> None:
    """Less common ratios exercise both kernels (dense for big L, correlations otherwise)."""
    x = log_sweep(in_rate, 0.12)
    whole = Resampler(in_rate, out_rate).process(x)
    rng = np.random.default_rng(in_rate + out_rate)
    sizes = rng.integers(0, in_rate // 40, 40).tolist()
    chunked = stream(Resampler(in_rate, out_rate), x, sizes)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)
    assert whole.shape[0] == -(-(x.shape[0] * out_rate) // in_rate)
    y = resample_once(tone(1000.0, in_rate, 0.1), in_rate, out_rate)
    amp, resid = fit_tone(steady(y, out_rate, 0.02), 1000.0, out_rate)
    assert abs(db(amp / 0.5)) <= 0.5 and db(resid * math.sqrt(2) / 0.5) <= -60.0
