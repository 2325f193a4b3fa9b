"""What a quiet call's VAD window costs: the quiet short way against the full path, same run.

Why: most of a call is both sides silent. Per 32 ms window a call's window handler (``CallSession._on_window``:
the gate, the segmenter, the end-of-turn bookkeeping, the turn engine's tick) takes a short way for windows below
the VAD's threshold while the caller is not speaking. This prints µs of CPU per quiet window through
``_on_window`` (a phone call as set up: echo canceller, noise gate, end-of-turn model on; -45 dBFS line noise
through the canceller first, as on a call), the short way against the full path (``_quiet_path=False`` and an
engine that ticks in full), and what the difference is worth per call-second (31.25 windows).

CPU is ``time.thread_time()`` around each window; the best of ``--repeat`` runs. Usage:
python bench/bench_quiet.py [--windows 3000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from telebridge.pipeline.call import CallSession  # noqa: E402
from telebridge.pipeline.end_of_turn import EndOfTurn  # noqa: E402
from telebridge.pipeline.inbound_gate import InboundGate  # noqa: E402
from telebridge.pipeline.segmenter import SegmenterParams, VadSegmenter  # noqa: E402
from telebridge.pipeline.turns import TurnEngine, TurnParams  # noqa: E402

RATE, WIN = 8000, 256
NOISE = 10 ** (-45 / 20)


class FullTick(TurnEngine):
    def _idle(self) -> list[Any]:
        return []  # every tick in full (no quiet spells)


class _Sink:
    sample_rate = RATE
    on_turn_audible = on_turn_played = None


def _call(short: bool) -> CallSession:
    s = CallSession(runtime=None, agent=None, call_id="bench", custom_data={}, sink=_Sink(), close=None)  # type: ignore[arg-type]
    s._quiet_path = short
    s._segmenter = VadSegmenter(SegmenterParams(sample_rate=RATE))
    s.engine = (TurnEngine if short else FullTick)(TurnParams(silence_timeout=3600.0))
    s.gate = InboundGate(RATE, RATE, canceller=True, guard=True)
    s._eot = EndOfTurn(0.5, sample_rate=RATE)
    s._run_actions = lambda actions: None  # type: ignore[method-assign]
    return s


async def window_us(short: bool, windows: int, repeat: int) -> float:
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal((windows, WIN)) * NOISE).astype(np.float32)
    probs = rng.uniform(0.0, 0.1, windows).tolist()
    best = float("inf")
    for _ in range(repeat):
        s = _call(short)
        spent = 0.0
        for i in range(windows):
            w = s.gate.cancel_held(audio[i])
            t0 = time.thread_time()
            s._on_window(probs[i], w, (i + 1) * WIN / RATE)
            spent += time.thread_time() - t0
        best = min(best, spent)
    return best / windows * 1e6


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    full = await window_us(False, args.windows, args.repeat)
    short = await window_us(True, args.windows, args.repeat)
    print(f"window: full path {full:.2f} us, short way {short:.2f} us per quiet window "
          f"({short / full:.2f}x; {(full - short) / 32:.3f} ms less CPU per call-second)")


if __name__ == "__main__":
    asyncio.run(main())
