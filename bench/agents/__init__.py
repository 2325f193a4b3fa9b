"""Agents the benchmarks serve: written as Jay agent files, loaded with ``telebridge serve --agent <file>``."""

import os

from telebridge.config import VAD


def bench_vad() -> VAD.Silero:
    """The agents' VAD: the shipped default (``VAD.Silero()``: phone calls run it at 8 kHz, on the line's audio as
    is), or ``BENCH_VAD_SAMPLE_RATE=16000`` for the wideband experiment (every frame resampled 8 -> 16 kHz first)."""
    rate = os.environ.get("BENCH_VAD_SAMPLE_RATE")
    return VAD.Silero(sample_rate=int(rate)) if rate else VAD.Silero()


def vad_rate(server_env: dict[str, str]) -> int:
    """The rate Silero runs at on the bench's phone calls, given the server's environment (what
    ``bench_floor.py`` must measure to compare)."""
    return int(server_env.get("BENCH_VAD_SAMPLE_RATE") or 8000)
