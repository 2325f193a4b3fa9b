"""Embedded Piper: how soon the first words of a reply are ready, by how the reply's first chunk is cut.

Why: with the embedded stack, Piper's synthesis of a reply's first chunk is the largest single piece of the
time between the end of the caller's question and the agent's first audio (a whole-sentence engine: nothing is
heard until the whole chunk is made, in time proportional to its length). Each reply below (the demo agent's,
plus two LLM-like ones) is cut by :class:`SentenceChunker` two ways, measured in the same run:

* ``before``: the previous rule -- a clause mark (``, ; :``) ends the first chunk only after 6 words, Piper's
  leading silence kept;
* ``now``: what replies get today -- a clause mark after 4 words, Piper's leading silence trimmed -- on the
  one-thread session a busy server uses;
* ``idle``: the same chunk on the two-thread session an idle server's pool uses (``PiperTTS`` after warmup).

Per reply: the first chunk's audio length, synthesis time (median of ``--repeats``, the sides alternating) and
CPU time, and the leading silence before its first word (the caller waits through that too). The figure that
matters is ``first word ready`` = synthesis + leading silence, against ``before``.

Run: .venv/bin/python bench/bench_tts_first_chunk.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from telebridge.agents import demo  # noqa: E402
from telebridge.pipeline.sentences import SentenceChunker  # noqa: E402
from telebridge.providers.tts.piper import (  # noqa: E402
    LEAD_FLOOR,
    default_piper_voice,
    leading_silence,
    load_piper_voice,
)

REPLIES = (
    demo.HOURS,
    demo.ADDRESS,
    demo.PRICES,
    "I'd be happy to book that for you. What day would work best for you?",
    "I'm sorry you're in pain. We keep emergency slots open every morning, so we can see you today.",
    "Of course. All our front desk staff are with patients right now, so I'll ask someone to call you back.",
    "We have a free slot on Tuesday at 10 and another one on Thursday at 2 if that suits you.",
    "Your appointment with Doctor Lee is confirmed for Friday morning at a quarter past nine.",
)


def first_chunk(text: str, **options: int | bool) -> str:
    chunker = SentenceChunker(**options)
    return (chunker.push(text) + chunker.flush())[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=6)
    args = ap.parse_args()
    from piper.config import SynthesisConfig

    path = default_piper_voice()
    voices = {1: load_piper_voice(path), 2: load_piper_voice(path, threads=2)}  # busy and idle server sessions
    config = SynthesisConfig(normalize_audio=True, volume=0.9)
    rate = voices[1].config.sample_rate

    def synth(text: str, threads: int) -> tuple[float, float, np.ndarray]:
        t0, c0 = time.perf_counter(), time.process_time()
        audio = np.concatenate([c.audio_int16_array for c in voices[threads].synthesize(text, config)])
        return time.perf_counter() - t0, time.process_time() - c0, audio

    for threads in voices:
        synth("Warming up the voice.", threads)
    print(f"{'first chunk':58} {'audio s':>7} {'synth ms':>8} {'cpu ms':>6} {'lead ms':>7} {'ready ms':>8}")
    sides = (("before", {"first_min_words": 6}, False, 1), ("now", {}, True, 1), ("idle", {}, True, 2))
    ready: dict[str, list[float]] = {side[0]: [] for side in sides}
    for reply in REPLIES:
        chunks = {side: first_chunk(reply, **options) for side, options, _, _ in sides}
        times: dict[str, list[tuple[float, float]]] = {side[0]: [] for side in sides}
        audio: dict[str, np.ndarray] = {}
        for repeat in range(args.repeats):  # alternating, so load on the shared machine hits all alike
            for side, _, _, threads in sides if repeat % 2 == 0 else sides[::-1]:
                seconds, cpu, audio[side] = synth(chunks[side], threads)
                times[side].append((seconds, cpu))
        for side, _, trim, _ in sides:
            loud = np.flatnonzero(np.abs(audio[side]) > LEAD_FLOOR * 32768)
            lead = (int(loud[0]) if loud.size else 0) - (leading_silence(audio[side], rate) if trim else 0)
            seconds = statistics.median(t for t, _ in times[side])
            cpu = statistics.median(c for _, c in times[side])
            total = seconds + lead / rate
            ready[side].append(total)
            print(f"{side + ': ' + chunks[side][:50]:58} {len(audio[side]) / rate:7.2f} {1000 * seconds:8.0f} "
                  f"{1000 * cpu:6.0f} {1000 * lead / rate:7.0f} {1000 * total:8.0f}", flush=True)
    before, now, idle = (statistics.median(ready[s]) for s in ("before", "now", "idle"))
    print(f"\nfirst word ready (synthesis + leading silence), median over {len(REPLIES)} replies: "
          f"before {1000 * before:.0f} ms, now {1000 * now:.0f} ms ({now / before:.2f}x), "
          f"idle server {1000 * idle:.0f} ms ({idle / before:.2f}x; {idle / now:.2f}x of now)")


if __name__ == "__main__":
    main()
