"""Outbound pacing on the event loop the server runs (uvloop): one wake-up per chunk, never a busy wait.

uvloop keeps ``loop.time()`` in whole milliseconds and runs ``asyncio.sleep`` of under half a millisecond as
``call_soon``; a pacer that waits for a fraction of a millisecond spins until the clock ticks (it did: ~200 wake-ups
per call-second of agent audio instead of 12.5).
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import uvloop

from telebridge.pipeline import outbound
from telebridge.pipeline.outbound import TIMER_RESOLUTION, OutboundAudio, Pacer


def test_a_wait_under_the_timer_resolution_is_no_wait() -> None:
    pacer = Pacer(lead=0.12)
    pacer.sent(10.0, 0.08)  # plays until 10.08
    assert pacer.wait_time(10.0) == 0.0  # inside the lead
    pacer.sent(10.0, 0.08)  # plays until 10.16: may send again at 10.04
    assert pacer.wait_time(10.0) == pytest.approx(0.04)
    assert pacer.wait_time(10.04 - TIMER_RESOLUTION / 2) == 0.0  # half a millisecond early: send now
    assert pacer.wait_time(10.04 - 2 * TIMER_RESOLUTION) == pytest.approx(2 * TIMER_RESOLUTION)
    assert pacer.wait_time(10.04 + 1e-12) == 0.0


def _paced_run(seconds: float, monkeypatch: pytest.MonkeyPatch) -> tuple[list[float], int]:
    """Send ``seconds`` of agent audio through OutboundAudio on uvloop; the media send times and the sleeps taken."""
    sleeps = 0
    real_sleep = asyncio.sleep
    sid = "MZpacing0123"

    async def counting_sleep(delay: float, *args: object) -> object:
        # (``outbound.asyncio`` is the asyncio module: count only the sender's own sleeps, not those of event loops
        # other tests left running in this process's threads)
        nonlocal sleeps
        task = asyncio.current_task()
        if task is not None and task.get_name() == f"outbound:{sid}":
            sleeps += 1
        return await real_sleep(delay, *args)

    monkeypatch.setattr(outbound.asyncio, "sleep", counting_sleep)

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        sent: list[float] = []

        async def send(text: str) -> None:
            if json.loads(text)["event"] == "media":
                sent.append(loop.time())

        out = OutboundAudio(sid, send, chunk_ms=80, lead_ms=120)
        out.start()
        out.enqueue(1, np.full(int(8000 * seconds), 0.1, np.float32))
        out.finish_turn(1)
        chunks, deadline = -(-int(8000 * seconds) // out.chunk_bytes), loop.time() + seconds + 5.0
        while len(sent) < chunks and loop.time() < deadline:  # (however busy the machine: all of it, or a failure)
            await real_sleep(0.05)
        await out.aclose()
        return sent

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main()), sleeps


def test_the_sender_wakes_once_per_chunk_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    sent, sleeps = _paced_run(1.2, monkeypatch)
    assert len(sent) == 15  # 1.2 s in 80 ms chunks
    # Real time, with the lead: the first two chunks at once, then one every 80 ms.
    gaps = np.diff(sent[2:])
    assert 0.07 <= float(np.median(gaps)) <= 0.09
    assert sent[-1] - sent[0] >= 1.2 - 0.08 - 0.12 - 0.01
    # One sleep per paced chunk (a spinning pacer took hundreds here).
    assert sleeps <= len(sent) + 2, f"{sleeps} sleeps for {len(sent)} chunks"
