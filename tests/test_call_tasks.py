"""A call's tasks all end with it: cancel_all cancels again a task that swallowed its cancel, and the ones
spawned meanwhile (pipeline/call_tasks.py)."""

from __future__ import annotations

import asyncio
import logging

from telebridge.pipeline import call_tasks
from telebridge.pipeline.call_tasks import cancel_all


async def test_a_task_that_swallows_its_cancel_and_one_spawned_meanwhile_both_end(monkeypatch) -> None:
    monkeypatch.setattr(call_tasks, "ROUND_SECONDS", 0.05)
    tasks: set[asyncio.Task] = set()
    cancels = {"swallower": 0, "spawner": 0}
    late: list[asyncio.Task] = []

    def spawn(coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    async def swallower() -> None:  # what a reply did when wait_for lost its cancel: went back to its queue
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancels["swallower"] += 1
                if cancels["swallower"] == 1:
                    continue
                raise

    async def spawner() -> None:  # a task that starts another as it unwinds
        try:
            await asyncio.Event().wait()
        finally:
            cancels["spawner"] += 1
            late.append(spawn(asyncio.Event().wait()))

    first = [spawn(swallower()), spawn(spawner())]
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_all(tasks, "CA1"), 5)
    assert not tasks and all(t.done() for t in first + late) and len(late) == 1
    assert cancels == {"swallower": 2, "spawner": 1}


async def test_a_task_that_never_stops_is_reported_and_left_behind(monkeypatch, caplog) -> None:
    monkeypatch.setattr(call_tasks, "ROUND_SECONDS", 0.02)
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass

    task = asyncio.get_running_loop().create_task(stubborn(), name="CA2:stubborn")
    tasks = {task}
    with caplog.at_level(logging.ERROR, logger="telebridge.call"):
        await asyncio.wait_for(cancel_all(tasks, "CA2"), 5)
    assert tasks == {task} and not task.done()
    assert "1 task(s) ignored cancellation" in caplog.text and "CA2:stubborn" in caplog.text
    stop.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
