"""Interim transcripts: the words of an utterance while the caller is still speaking over the agent.

Why: ``interrupt_word_threshold`` counts interim words, and pause-then-confirm needs to know within about a
second whether the caller said real words or only coughed. Cloud recognisers stream interim results; the
embedded Whisper does not, so we transcribe the *growing* utterance every ``interval`` seconds (capped to its
last ``max_seconds``) in the shared speech pool.

Why it stays cheap: it runs only while the turn engine says an interim could change a decision (caller speech
over audible agent audio, interruptions allowed) -- a few times per barge-in, never on the inbound hot path; at
most one run per call is in flight, and a run that outlives its utterance is simply ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

__all__ = ["InterimTranscriber"]


class InterimTranscriber:
    def __init__(
        self,
        transcribe: Callable[[np.ndarray], Awaitable[str]],
        spawn: Callable[[Awaitable[None], str], asyncio.Task],
        deliver: Callable[[int, str], None],
        *,
        sample_rate: int,
        first_after: float = 0.25,
        interval: float = 0.4,
        max_seconds: float = 6.0,
    ) -> None:
        self._transcribe = transcribe
        self._spawn = spawn
        self._deliver = deliver
        self._max_samples = int(max_seconds * sample_rate)
        self.first_after = first_after
        self.interval = interval
        self._utterance: int | None = None
        self._next_at = 0.0
        self._inflight: asyncio.Task | None = None
        self.runs = 0

    def poll(self, t: float, utterance_id: int, started_at: float, snapshot: Callable[[], np.ndarray]) -> None:
        """Called per VAD window while an interim is wanted; starts a run when one is due and none is running."""
        if utterance_id != self._utterance:
            self._utterance = utterance_id
            self._next_at = started_at + self.first_after
        if t < self._next_at or (self._inflight is not None and not self._inflight.done()):
            return
        self._next_at = t + self.interval
        audio = snapshot()[-self._max_samples :]
        self.runs += 1
        self._inflight = self._spawn(self._run(utterance_id, audio), f"interim{utterance_id}")

    async def _run(self, utterance_id: int, audio: np.ndarray) -> None:
        text = await self._transcribe(audio)
        self._deliver(utterance_id, text)
