"""The numeric floor under the inbound path: the same audio work for N calls, batched, with no server.

Why: the issue asks telebridge's inbound cost per call-second to stay within 1.5x of (the bare-WebSocket
baseline of ``cpu_per_call.py`` + this floor). The baseline is what merely receiving the frames costs (uvicorn,
WebSocket, ``json.loads``); this is the least the audio itself can cost in Python with numpy and ONNX Runtime:
what is left once every per-call object, await and event is gone.

Per 20 ms of audio, for N streams at once: ``base64`` decoding of each call's media payload (one call per frame:
every call's JSON carries its own text), μ-law decoding of all N frames in one table lookup, 8 -> 16 kHz
resampling of all N with telebridge's own polyphase filter (one ``[N, 160, K] @ [K, 2]`` product, same output as
``telebridge.audio.resample.Resampler``), and every 32 ms one Silero ONNX run for all N streams
(``[N, 64 + 512]``, one thread), as telebridge's ``VadHub`` batches. The callers' audio is the same -45 dBFS line
noise the load generator sends. ``--rate 8000`` runs Silero on the phone audio as is (no resampling).

CPU is ``time.process_time()`` of this process while it works through ``--seconds`` of audio as fast as it can;
printed as CPU milliseconds per call-second (= CPU ms / (N x seconds)), like ``cpu_per_call.py``.

``--paced`` also does the same work in real time, as a server must: each 20 ms frame's work when the frame is due,
then a sleep until the next one. On the shared virtual machines this bench runs on, the same Silero ONNX run costs
1.4-1.6x as much after 32 ms of anything else (a sleep, or Python spinning) as it does back to back
(``bench_vad.py --gaps`` measures it), so the paced figure is the floor a real-time server can reach here; the
back-to-back one stays the issue's target.

Usage: python bench/bench_floor.py [--n 10,25,50] [--seconds 20] [--rate 16000] [--paced] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import time

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode
from telebridge.audio.resample import design_filter
from telebridge.pipeline.silero import SileroModel

FRAME = 160  # 20 ms at 8 kHz
NOISE_DBFS = -45.0


def noise_payloads(seconds: float = 10.0, seed: int = 1) -> list[str]:
    """Base64 μ-law payloads of line noise at ``NOISE_DBFS``, one per 20 ms (as in Twilio's media messages)."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(int(seconds * 8000) + 2)
    noise = (white[2:] + white[1:-1] + white[:-2]) / 3.0
    noise *= 10 ** (NOISE_DBFS / 20) / float(np.sqrt(np.mean(noise**2)))
    data = ulaw_encode(noise.astype(np.float32))
    return [base64.b64encode(data[i : i + FRAME]).decode() for i in range(0, len(data) - FRAME + 1, FRAME)]


def floor_cpu(n: int, seconds: float, rate: int = 16000, paced: bool = False) -> float:
    """CPU seconds to decode, resample and VAD ``seconds`` of audio for ``n`` streams, batched: as fast as it can,
    or ``paced``: each 20 ms frame when it is due (the wall clock then takes ``seconds``)."""
    payloads = noise_payloads()
    model = SileroModel(threads=1)
    win, ctx = model.window(rate), model.context_size(rate)
    f = design_filter(8000, 16000) if rate == 16000 else None
    bank_t = f.bank.T if f is not None else None
    history = np.zeros((n, f.taps - 1)) if f is not None else None
    state = model.initial_state(n)
    context = np.zeros((n, ctx), np.float32)
    pending = np.zeros((n, 0), np.float32)
    b64decode = base64.b64decode
    count = len(payloads)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(int(seconds / 0.02)):
        if paced:
            wait = t0 + i * 0.02 - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        raw = b"".join([b64decode(payloads[(i + 37 * c) % count]) for c in range(n)])
        x = ulaw_decode_float(raw).reshape(n, FRAME)
        if f is not None:
            buf = np.concatenate((history, x), axis=1)
            x = (sliding_window_view(buf, f.taps, axis=1) @ bank_t).reshape(n, -1).astype(np.float32)
            history = buf[:, -(f.taps - 1) :]
        pending = np.concatenate((pending, x), axis=1)
        while pending.shape[1] >= win:
            inputs = np.concatenate((context, pending[:, :win]), axis=1)
            _, state = model.infer(inputs, state, rate)
            context = inputs[:, -ctx:]
            pending = pending[:, win:]
    return time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="10,25,50", help="comma-separated numbers of streams")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of audio per stream")
    ap.add_argument("--rate", type=int, default=16000, choices=(8000, 16000), help="Silero's sample rate")
    ap.add_argument("--paced", action="store_true", help="also the same work in real time (one frame per 20 ms)")
    ap.add_argument("--json", action="store_true", help="one JSON line per N (for cpu_per_call.py)")
    args = ap.parse_args()
    floor_cpu(2, 1.0, args.rate)  # warm-up: ONNX Runtime's first runs allocate
    if not args.json:
        resampled = " + 8->16 kHz" if args.rate == 16000 else ""
        print(f"inbound floor: base64 + μ-law{resampled} + batched Silero at {args.rate} Hz, "
              f"{args.seconds:.0f} s of audio per stream")
    for n in [int(x) for x in args.n.split(",") if x.strip()]:
        cpu = floor_cpu(n, args.seconds, args.rate)
        paced = floor_cpu(n, args.seconds, args.rate, paced=True) if args.paced else None
        if args.json:
            print(json.dumps({"n": n, "seconds": args.seconds, "cpu_s": cpu, "paced_cpu_s": paced}), flush=True)
            continue
        line = f"  N={n:3d}: {1000 * cpu / (n * args.seconds):5.2f} ms per call-second ({1000 * cpu:.0f} ms CPU)"
        if paced is not None:
            line += f"; paced: {1000 * paced / (n * args.seconds):5.2f} ({paced / cpu:.2f}x)"
        print(line)


if __name__ == "__main__":
    main()
