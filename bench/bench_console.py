"""What the console costs a call: the conversation hooks through its observer, and the 5 Hz meter tick.

Why: the console watches every call (its :class:`~telebridge.console.feed.ConsoleFeed` sits next to the call's
own observer), so each hook a conversation fires pays for it, watchers or not. This prints µs per hook for a
realistic turn (speech start/stop, transcript, reply start, three sentences, first audio with its latency row,
heard, done) through :class:`~telebridge.pipeline.observer.Observers` with a do-nothing observer alone (the
baseline, measured in the same run), and with the console's feed added with 0, 1 and 5 live-feed watchers; then
the hub's share of one meter tick for 50 live calls.
Run: .venv/bin/python bench/bench_console.py [--turns N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from telebridge.console.feed import ConsoleFeed  # noqa: E402
from telebridge.console.hub import ConsoleHub  # noqa: E402
from telebridge.pipeline.observer import ConversationObserver, Observers  # noqa: E402

LATENCY = {"endpointing": 0.42, "stt": 0.21, "llm_first_token": 0.31, "tts_first_audio": 0.18, "send": 0.01,
           "total": 0.92}
HOOKS_PER_TURN = 10


def turn(obs: Observers, n: int) -> None:
    obs.user_speech_started(1.0)
    obs.user_speech_stopped(2.0)
    obs.user_transcript("What are your opening hours on Saturdays, please?")
    obs.reply_started(n)
    obs.reply_text(n, "We're open Monday to Friday from 8 a.m. to 6 p.m.", 0)
    obs.reply_audible(n, LATENCY)
    obs.reply_text(n, "And Saturdays from 9 a.m. to 1 p.m.", 48000)
    obs.reply_heard(n, 0.95)
    obs.reply_text(n, "We're closed on Sundays.", 80000)
    obs.reply_done(n, "We're open ... closed on Sundays.")


def time_turns(watchers: int | None, turns: int) -> float:
    """µs per hook; ``watchers`` None = the baseline (no console)."""
    hub = ConsoleHub()
    observers: list = [ConversationObserver()]
    subs = []
    if watchers is not None:
        hub.open("CA1", 0.0, number="+14155550123", agent="demo")
        observers.append(ConsoleFeed(hub, "CA1", clock=time.time))
        subs = [hub.subscribe() for _ in range(watchers)]
    obs = Observers(*observers)
    t0 = time.perf_counter()
    for n in range(turns):
        turn(obs, n)
        for sub in subs:  # the feed drains its queue as events come
            sub.take()
    return (time.perf_counter() - t0) / (turns * HOOKS_PER_TURN) * 1e6


def time_levels(calls: int, ticks: int) -> float:
    """µs of hub work per meter tick for ``calls`` live calls with one watcher."""
    hub = ConsoleHub()
    for i in range(calls):
        hub.open(f"CA{i}", 0.0, number="+14155550123", agent="demo")
    sub = hub.subscribe()
    readings = {f"CA{i}": (0.01 * (i % 7), 0.02) for i in range(calls)}
    t0 = time.perf_counter()
    for _ in range(ticks):
        hub.levels(1.0, readings)
        sub.take()
    return (time.perf_counter() - t0) / ticks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=3000, help="turns per measurement (the hub keeps the newest)")
    args = parser.parse_args()

    def best(fn, *a) -> float:  # the median of 5 runs: the shared machine's noise is one-sided
        return statistics.median(fn(*a) for _ in range(5))

    base = best(time_turns, None, args.turns)
    print(f"conversation hooks, µs per hook ({args.turns} turns x {HOOKS_PER_TURN} hooks, median of 5):")
    print(f"  baseline (call's own observer only)      {base:7.2f}")
    for watchers in (0, 1, 5):
        us = best(time_turns, watchers, args.turns)
        print(f"  + console feed, {watchers} watcher(s)            {us:7.2f}   ({us / base:5.1f}x baseline, "
              f"+{us - base:.2f} µs)")
    per_tick = best(time_levels, 50, 2000)
    print(f"meter tick, 50 live calls, 1 watcher: {per_tick:.0f} µs of hub work per tick, "
          f"{per_tick * 5 / 1000:.2f} ms CPU per second at 5 Hz (only while someone watches)")


if __name__ == "__main__":
    main()
