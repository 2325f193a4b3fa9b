"""Ending every task a call started, even one that does not stop when first told to.

Why: a call's tasks (setup, replies and their text sources, handlers, provider cancels) must all end with the
call. Cancelling each once and awaiting them is not enough: on Python 3.11, ``asyncio.wait_for`` returns the
inner result when it was ready at the very moment of the cancellation, so a task streaming provider audio can
swallow its cancel and go on -- and a task still running can spawn another. The soak (``bench/soak.py``) caught
calls that never finished closing that way: a reply task back at its sentence queue, whose producer had been
cancelled, waiting forever and keeping the call (and its WebSocket) alive.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("telebridge.call")

ROUND_SECONDS = 1.0  # a task still running this long after its cancel is cancelled again
ROUNDS = 5  # ... at most this many times; then it is reported and left behind


async def cancel_all(tasks: set[asyncio.Task], call_id: str) -> None:
    """Cancel ``tasks`` (a live set: tasks spawned meanwhile join it) and wait until none is left."""
    for _ in range(ROUNDS):
        if not tasks:
            return
        batch = list(tasks)
        for task in batch:
            task.cancel()
        await asyncio.wait(batch, timeout=ROUND_SECONDS)
        for task in batch:  # done ones leave the set through their own callback; this also covers tests' sets
            if task.done():
                tasks.discard(task)
    if tasks:
        log.error("call %s: %d task(s) ignored cancellation and are left behind: %s", call_id, len(tasks),
                  ", ".join(sorted(t.get_name() for t in tasks)))
