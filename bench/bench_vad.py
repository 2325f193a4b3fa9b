"""VAD CPU cost per call: batched across calls (VadHub) vs one inference per stream per window.

Prints CPU milliseconds spent per second of call audio, and µs per 32 ms window, for
N = 1, 10, 50 concurrent streams.  CPU time is ``time.process_time`` (all threads of
the process, so the hub's worker thread is included), over a fixed amount of audio.

Methods:
  unbatched  one ``SileroModel.infer`` per stream per window (B = 1)
  batched    one ``infer`` per window for all N streams (B = N), no asyncio
  hub        the real ``VadHub``: 20 ms frames fed per stream, one pass per 32 ms tick,
             through the 1-thread "vad" ``InferencePool`` (all overheads included)

``--gaps``: instead, what one batched run (``--streams``' largest N) costs right after another one and after a pause
of 0.5 to 32 ms of Python spinning (the hub runs once per 32 ms tick), interleaved in random order, median and
quartiles of the wall time: on shared virtual machines the run slows down the longer the pause.

Usage: python bench/bench_vad.py [--seconds 10] [--rate 8000] [--streams 1,10,50] [--gaps]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from telebridge.inference import InferencePool
from telebridge.pipeline.vad import SileroModel, VadHub


def make_streams(n: int, seconds: float, rate: int) -> list[np.ndarray]:
    """Speech-like signals (voiced bursts with pauses) so the model's work is realistic."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    out = []
    for i in range(n):
        f0 = 100 + 20 * i % 120
        voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
        envelope = (np.sin(2 * np.pi * (0.3 + 0.01 * i) * t) > 0).astype(np.float64)
        x = 0.2 * voiced * envelope + 0.003 * rng.standard_normal(t.size)
        out.append(x.astype(np.float32))
    return out


def run_unbatched(model: SileroModel, streams: list[np.ndarray], rate: int) -> float:
    win, ctx = model.window(rate), model.context_size(rate)
    n_win = len(streams[0]) // win
    states = [model.initial_state(1) for _ in streams]
    contexts = [np.zeros((1, ctx), np.float32) for _ in streams]
    c0 = time.process_time()
    for w in range(n_win):
        for i, s in enumerate(streams):
            x = np.concatenate([contexts[i], s[None, w * win : (w + 1) * win]], axis=1)
            _, states[i] = model.infer(x, states[i], rate)
            contexts[i] = x[:, -ctx:]
    return time.process_time() - c0


def run_batched(model: SileroModel, streams: list[np.ndarray], rate: int) -> float:
    win, ctx = model.window(rate), model.context_size(rate)
    n_win = len(streams[0]) // win
    stacked = np.stack(streams)
    state = model.initial_state(len(streams))
    context = np.zeros((len(streams), ctx), np.float32)
    c0 = time.process_time()
    for w in range(n_win):
        x = np.concatenate([context, stacked[:, w * win : (w + 1) * win]], axis=1)
        _, state = model.infer(x, state, rate)
        context = x[:, -ctx:]
    return time.process_time() - c0


def run_hub(model: SileroModel, streams: list[np.ndarray], rate: int) -> float:
    async def go() -> float:
        pool = InferencePool("vad", 1, 64)
        hub = VadHub(model, pool)
        count = [0]

        def on_window(p: float, w: np.ndarray, t: float) -> None:
            count[0] += 1

        vs = [hub.open(rate, on_window) for _ in streams]
        frame = rate // 50  # 20 ms, as Twilio sends
        tick = int(rate * 0.032)
        c0 = time.process_time()
        fed_since_tick = 0
        for start in range(0, len(streams[0]), frame):
            for v, s in zip(vs, streams):
                v.feed(s[start : start + frame])
            fed_since_tick += frame
            if fed_since_tick >= tick:  # what hub.run() does every tick
                fed_since_tick -= tick
                await hub._pass()
        await hub.flush_now()
        spent = time.process_time() - c0
        pool.shutdown(wait=True)
        return spent

    return asyncio.run(go())


def run_gaps(model: SileroModel, n: int, rate: int, repeats: int = 80) -> None:
    """One ``[n, ctx + win]`` run after pauses of Python spinning, interleaved (see the module docstring)."""
    import random

    x = np.random.default_rng(0).standard_normal((n, model.context_size(rate) + model.window(rate)))
    x = (0.01 * x).astype(np.float32)
    state = model.initial_state(n)
    gaps = [0.0, 0.0005, 0.002, 0.008, 0.032]
    for _ in range(30):
        model.infer(x, state, rate)
    order = gaps * repeats
    random.Random(1).shuffle(order)
    took: dict[float, list[float]] = {g: [] for g in gaps}
    for gap in order:
        model.infer(x, state, rate)  # (so that no pause comes before the pause)
        end = time.perf_counter() + gap
        while time.perf_counter() < end:
            pass
        t0 = time.perf_counter()
        model.infer(x, state, rate)
        took[gap].append(time.perf_counter() - t0)
    print(f"Silero @ {rate} Hz, one run of {n} streams after a pause of Python spinning ({repeats} each, interleaved)")
    base = float(np.median(took[0.0]))
    for gap in gaps:
        us = 1e6 * np.array(took[gap])
        print(f"  pause {1000 * gap:5.1f} ms: median {np.median(us):6.0f} µs (quartiles {np.percentile(us, 25):6.0f}"
              f"-{np.percentile(us, 75):6.0f}), {np.median(us) / (1e6 * base):4.2f}x back to back")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per stream")
    ap.add_argument("--rate", type=int, default=8000, choices=[8000, 16000])
    ap.add_argument("--streams", default="1,10,50")
    ap.add_argument("--gaps", action="store_true", help="one batched run after pauses of 0-32 ms (see above)")
    args = ap.parse_args()

    model = SileroModel(threads=1)
    if args.gaps:
        run_gaps(model, max(int(s) for s in args.streams.split(",")), args.rate)
        return
    win = model.window(args.rate)
    counts = [int(s) for s in args.streams.split(",")]
    # warm up ONNX Runtime's allocations for every batch size we will use
    warm = make_streams(max(counts), 1.0, args.rate)
    for n in counts:
        run_batched(model, warm[:n], args.rate)
    run_unbatched(model, warm[:1], args.rate)

    print(f"Silero VAD @ {args.rate} Hz, {win}-sample windows, {args.seconds:g} s of audio per stream")
    print(f"{'streams':>7} {'method':>10} {'CPU ms / call-s':>16} {'µs / window':>12} {'vs unbatched':>13}")
    for n in counts:
        streams = make_streams(n, args.seconds, args.rate)
        windows = n * (len(streams[0]) // win)
        call_seconds = n * args.seconds
        base = None
        for name, fn in (("unbatched", run_unbatched), ("batched", run_batched), ("hub", run_hub)):
            spent = fn(model, streams, args.rate)
            base = spent if base is None else base
            print(
                f"{n:>7} {name:>10} {1000 * spent / call_seconds:>16.2f} "
                f"{1e6 * spent / windows:>12.1f} {base / spent:>12.2f}x"
            )


if __name__ == "__main__":
    main()
