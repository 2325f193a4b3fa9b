"""Embedded Whisper on phone turns: time per turn and word error rate, short window vs the full 30 s window.

Phone clips: ~22 sentences (one word to seven seconds, numbers, names) synthesized with Piper at 8 kHz through a
μ-law phone leg, clean and with line noise at three levels (88 clips), plus noise alone (must give no words).
Each configuration transcribes every clip once (one worker thread, as a call's turn does) after a warm-up run.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_whisper.py [--windows 10,12,15]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PHRASES = [
    "Yes.", "No thanks.", "Uh-huh.", "Okay.", "Hello?", "Tuesday.", "Sure, go ahead.",
    "What are your opening hours?", "Where are you located?", "How much does a checkup cost?",
    "I would like to book an appointment.", "Do you take dental insurance?", "Can I talk to a real person please?",
    "My number is four one five, five five five, one two three four.",
    "I'd like to book a table for two tonight at seven.",
    "Could you tell me whether the pharmacy on Main Street is open on Sunday afternoons?",
    "My name is Jennifer Alvarez and I'm calling about the invoice I received last week, number eight three two.",
    "I was wondering if you could help me reschedule my appointment from Thursday morning to Friday afternoon, "
    "because something came up at work and I can't make it.",
    "The weather has been terrible lately, and I think my flight might be delayed, so please keep my reservation "
    "until midnight.",
    "Please cancel my subscription.", "What's the status of my order?",
    "I need to speak with someone in billing about a charge of forty two dollars and fifty cents.",
]
NOISE_LEVELS = (0.006, 0.012, 0.02)


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    from speechutil import normalise_words

    r, h = normalise_words(ref), normalise_words(hyp)
    d = np.zeros((len(r) + 1, len(h) + 1), int)
    d[:, 0], d[0, :] = range(len(r) + 1), range(len(h) + 1)
    for i in range(1, len(r) + 1):
        for j in range(1, len(h) + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (r[i - 1] != h[j - 1]))
    return int(d[-1, -1]), len(r)


def clips() -> list[tuple[str, np.ndarray]]:
    from speechutil import synth_phone_16k

    rng = np.random.default_rng(1)
    clean = [(p, synth_phone_16k(p).astype(np.float32)) for p in PHRASES]
    out = list(clean)
    for level in NOISE_LEVELS:
        out += [(p, a + (rng.standard_normal(len(a)) * level).astype(np.float32)) for p, a in clean]
    out += [("", (rng.standard_normal(16000 * s) * level).astype(np.float32)) for s, level in ((1, 0.003), (3, 0.01))]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", default="12", help="short-window minimums to compare with the full window")
    parser.add_argument("--beams", default="5", help="beam sizes to try with each short window")
    args = parser.parse_args()
    from telebridge.inference import InferencePool
    from telebridge.providers.stt import whisper_window
    from telebridge.providers.stt.whisper import WhisperSTT

    data = clips()
    stt = WhisperSTT(pool=InferencePool("speech", 1, 4))
    stt._run_model(data[7][1], "en")  # warm-up
    print(f"{len(data)} clips, {sum(len(a) for _, a in data) / 16000:.0f} s of audio; load {os.getloadavg()[0]:.1f}")
    print(f"{'window':>9} {'WER':>7} {'median s':>9} {'p95 s':>7} {'x full':>7} {'re-decoded':>10} {'noise words':>11}")
    configs = [("full", None, 1)] + [(f"{w} s b{b}", int(w), int(b)) for w in args.windows.split(",")
                                      for b in args.beams.split(",")]
    full_median = None
    for name, minimum, beam in configs:
        stt.short_window = minimum is not None
        whisper_window.BEAM_SIZE = beam
        if minimum is not None:
            whisper_window.MIN_WINDOW_SECONDS = minimum
        stt.short_decodes = stt.full_decodes = 0
        errors = words = noise_words = 0
        times = []
        for text, audio in data:
            t0 = time.perf_counter()
            heard = stt._run_model(audio, "en").text
            times.append(time.perf_counter() - t0)
            if text:
                e, n = word_errors(text, heard)
                errors, words = errors + e, words + n
            else:
                noise_words += len(heard.split())
        median = float(np.median(times))
        full_median = full_median or median
        redecoded = stt.full_decodes if minimum is not None else 0
        print(f"{name:>9} {errors / words:7.1%} {median:9.3f} {np.percentile(times, 95):7.3f} "
              f"{full_median / median:7.1f} {redecoded:10d} {noise_words:11d}")


if __name__ == "__main__":
    main()
