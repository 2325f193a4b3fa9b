"""Echo handling: CPU per call-second and how much echo goes away, for each way of doing it.

Why: the echo canceller runs on every phone call, for every 20 ms of inbound audio, so what it costs per call
decides how many calls a core carries. Figures, each on the same audio in the same run:

* ``aec`` — :class:`telebridge.pipeline.aec.EchoCanceller` (numpy: frequency-domain NLMS placed by the
  correlators, and the gate's verdicts), in three situations: the agent talking with a speakerphone echo
  (ERL 12 dB, 250 ms), the agent talking on a line without echo, and the agent silent (the idle path, frame by
  frame); and the agent silent for long as a phone call runs it, "held per tick": the frames held since the last
  VAD tick, one or two at a time, through ``process_silent``.
* ``energy guard`` — the old per-window energy correlation (:class:`telebridge.pipeline.echo.EchoGuard`),
  which the canceller replaces on phone calls (it stays for sessions whose input and output rates differ).
* ``webrtc aec3`` — WebRTC's AEC3 through the ``livekit`` wheel's ``AudioProcessingModule`` (FFI into its
  Rust/C++ core, 10 ms frames), when that package is importable (``pip install livekit``; not a telebridge
  dependency). It gives no echo-path or double-talk figures through that API, only cleaned audio.
* ``silero vad`` — the VAD's own cost per call-second (one stream, unbatched), the yardstick: what every
  call already pays.

ERLE is the echo return loss enhancement after 4 s (how far below the inbound echo the output is); "echo
passed" counts the blocks of pure echo that would reach the VAD as sound (the canceller's gate; AEC3 has no
gate, so its output's loud blocks are counted).

Run: .venv/bin/python bench/bench_echo.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RATE, FRAME = 8000, 160


def signals(seconds: float, echo: bool) -> tuple[np.ndarray, np.ndarray]:
    """(inbound, reference): Piper speech as the caller heard it, echoed at 12 dB / 250 ms, -60 dBFS noise."""
    from speechutil import phone_line, synth
    from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode
    from telebridge.simulator.echo_line import EchoLine
    from telebridge.simulator.script import LineEcho

    text = ("Thanks for calling. Our office is open from nine in the morning until five in the evening, Monday to "
            "Friday. We are located at fourteen Harbor Street, right next to the ferry terminal. Parking is free "
            "behind the building, and the entrance is on the left. How can I help you today?")
    heard = phone_line(synth(text))
    reps = int(np.ceil(seconds * RATE / len(heard)))
    heard = np.tile(heard, reps)[: int(seconds * RATE) // FRAME * FRAME]
    line = EchoLine(LineEcho(-12.0, 0.25) if echo else None)
    rng = np.random.default_rng(0)
    inbound = np.concatenate([line.frame(heard[i : i + FRAME]) for i in range(0, len(heard), FRAME)])
    inbound = inbound * (1.0 if echo else 0.0) + (rng.standard_normal(len(heard)) * 1e-3).astype(np.float32)
    return ulaw_decode_float(ulaw_encode(inbound)), heard


def cpu(fn) -> float:  # noqa: ANN001
    c0 = time.process_time()
    fn()
    return time.process_time() - c0


def bench_aec(inbound: np.ndarray, ref: np.ndarray) -> tuple[float, float, int]:
    from telebridge.pipeline.aec import EchoCanceller, Verdict

    aec = EchoCanceller()
    out: list[np.ndarray] = []
    verdicts: list[int] = []

    def run() -> None:
        for i in range(0, len(inbound), FRAME):
            out.append(aec.process(inbound[i : i + FRAME], ref[i : i + FRAME]))
            verdicts.append(aec.verdict(i, i + FRAME))

    seconds = cpu(run)
    o = np.concatenate(out)
    loud = np.array([np.mean(o[i : i + FRAME] ** 2) > 1e-5 for i in range(0, len(o), FRAME)])
    passed = int(((np.array(verdicts) == Verdict.PASS) & loud).sum())
    return seconds, erle(inbound, o), passed


def bench_held(inbound: np.ndarray) -> float:
    """The agent silent for long (the canceller dormant), as on a phone call: the frames held since the last VAD
    tick (32 ms) through ``process_silent`` at once, one or two 20 ms frames at a time."""
    from telebridge.pipeline.aec import EchoCanceller

    aec = EchoCanceller()
    ticks = [320, 160] * (len(inbound) // 480 + 1)  # (8 frames per 5 ticks, as 20 ms frames meet 32 ms ticks)

    def run() -> None:
        i = 0
        for n in ticks:
            if i + n > len(inbound):
                break
            aec.process_silent(inbound[i : i + n])
            i += n

    return cpu(run)


def bench_energy_guard(inbound: np.ndarray, ref: np.ndarray) -> float:
    from telebridge.pipeline.echo import EchoGuard

    guard, win = EchoGuard(), 256

    def run() -> None:
        for i in range(0, len(inbound) - win, win):
            a, b = inbound[i : i + win], ref[i : i + win]
            guard.push(float(np.dot(a, a)) / win, float(np.dot(b, b)) / win)

    return cpu(run)


def bench_aec3(inbound: np.ndarray, ref: np.ndarray) -> tuple[float, float, int] | None:
    try:
        from livekit import rtc
    except ImportError:
        return None
    apm = rtc.AudioProcessingModule(echo_cancellation=True)
    n = RATE // 100
    to16 = lambda x: (np.clip(x, -1, 1) * 32767).astype(np.int16)  # noqa: E731
    near16, far16 = to16(inbound), to16(ref)
    out = np.zeros_like(near16)

    def run() -> None:
        for i in range(0, len(near16) - n + 1, n):
            far = rtc.AudioFrame(far16[i : i + n].tobytes(), RATE, 1, n)
            apm.process_reverse_stream(far)
            near = rtc.AudioFrame(near16[i : i + n].tobytes(), RATE, 1, n)
            apm.process_stream(near)
            out[i : i + n] = np.frombuffer(near.data, dtype=np.int16)

    apm.set_stream_delay_ms(0)
    seconds = cpu(run)
    o = out.astype(np.float32) / 32768
    loud = sum(np.mean(o[i : i + FRAME] ** 2) > 1e-5 for i in range(0, len(o), FRAME))
    return seconds, erle(inbound, o), int(loud)


def bench_vad(seconds: float) -> float:
    from telebridge.pipeline.silero import SileroModel

    model = SileroModel()
    win, ctx = model.window(RATE), model.context_size(RATE)
    x = (np.random.default_rng(1).standard_normal(int(seconds * RATE)) * 0.05).astype(np.float32)
    state, context = model.initial_state(1), np.zeros((1, ctx), np.float32)

    def run() -> None:
        nonlocal state, context
        for w in range(len(x) // win):
            chunk = np.concatenate([context, x[None, w * win : (w + 1) * win]], axis=1)
            _, state = model.infer(chunk, state, RATE)
            context = chunk[:, -ctx:]

    return cpu(run)


def erle(inbound: np.ndarray, out: np.ndarray) -> float:
    late = slice(4 * RATE, None)
    return float(10 * np.log10(np.mean(inbound[late] ** 2) / (np.mean(out[: len(inbound)][late] ** 2) + 1e-12)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="call audio per measurement")
    args = ap.parse_args()
    s = args.seconds
    echo_in, ref = signals(s, echo=True)
    clean_in, _ = signals(s, echo=False)
    silent = np.zeros_like(ref)
    vad = bench_vad(s)
    rows = []
    sec, e, passed = bench_aec(echo_in, ref)
    rows.append(("aec: agent talking, 12 dB echo", sec, f"{e:5.1f}", passed))
    sec, e, passed = bench_aec(clean_in, ref)
    rows.append(("aec: agent talking, no echo", sec, "", passed))
    sec, _, passed = bench_aec(clean_in, silent)
    rows.append(("aec: agent silent (idle path)", sec, "", passed))
    rows.append(("aec: agent silent, held per tick", bench_held(clean_in), "", None))
    rows.append(("energy guard (old, per window)", bench_energy_guard(echo_in, ref), "", None))
    aec3 = bench_aec3(echo_in, ref)
    if aec3 is not None:
        rows.append(("webrtc aec3 (livekit apm)", aec3[0], f"{aec3[1]:5.1f}", aec3[2]))
    rows.append(("silero vad (yardstick)", vad, "", None))
    print(f"echo handling on {s:.0f} s of call audio (CPU ms per call-second; ratio to the VAD measured now)")
    print(f"{'part':34} {'ms/s':>7} {'x vad':>6} {'ERLE dB':>8} {'echo passed':>12}")
    print("-" * 72)
    for name, seconds, e, passed in rows:
        ms = 1000 * seconds / s
        print(f"{name:34} {ms:7.2f} {seconds / vad:6.2f} {e:>8} {'' if passed is None else passed:>12}")
    if aec3 is None:
        print("(webrtc aec3 not measured: `pip install livekit` to include it)")


if __name__ == "__main__":
    main()
