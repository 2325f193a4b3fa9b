"""Text-to-speech engine contracts.

The agent's reply is split into sentences upstream and each sentence is synthesized separately, so the first
audio reaches the caller after one short synthesis instead of after the whole reply.

:class:`TTSEngine` (shared by every call) synthesizes a sentence whole. A streaming provider also offers
:meth:`StreamingTTSEngine.open_session`: one :class:`TTSSession` per call (a warm connection reused by every
reply) that yields each sentence's audio as it arrives and can stop a reply *at the provider* on barge-in.
:class:`OneShotSession` gives whole-sentence engines the same shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["TTSEngine", "TTSError", "TTSSession", "StreamingTTSEngine", "OneShotSession", "open_session"]


class TTSError(RuntimeError):
    """Synthesis failed, or the engine could not be set up (e.g. missing voice model)."""


@runtime_checkable
class TTSEngine(Protocol):
    """A sentence synthesizer.  Implementations must be safe for concurrent calls."""

    sample_rate: int
    """Rate (Hz) of the audio returned by :meth:`synthesize`."""

    async def synthesize(self, text: str) -> np.ndarray:
        """Speak one sentence/chunk: int16 mono at ``sample_rate``; empty for blank text."""
        ...


@runtime_checkable
class TTSSession(Protocol):
    """One call's synthesis session. ``reply_id`` groups a reply's sentences (a provider context)."""

    sample_rate: int

    def stream(self, text: str, *, reply_id: int) -> AsyncIterator[np.ndarray]:
        """Speak one sentence of reply ``reply_id``: int16 mono chunks at ``sample_rate`` as they arrive; the
        iterator ends when the sentence's audio is complete. Raises :class:`TTSError` on failure."""
        ...

    async def cancel(self, reply_id: int) -> None:
        """The caller barged in: tell the provider to stop generating this reply (Clear, close the context)."""
        ...

    async def end_reply(self, reply_id: int) -> None:
        """The reply's text is complete (providers with contexts close it)."""
        ...

    async def aclose(self) -> None:
        ...


@runtime_checkable
class StreamingTTSEngine(Protocol):
    sample_rate: int

    async def open_session(self, *, call_id: str) -> TTSSession:
        """Open the call's session (connect now, so the first sentence does not pay for it)."""
        ...


class OneShotSession:
    """A :class:`TTSSession` over a whole-sentence engine: each sentence arrives as one chunk.

    ``output_rate``: the rate the call plays audio at. An engine that can hand its sentences over at that rate
    (``synthesize_at``: the phrase cache, which keeps them resampled) does, and the session's rate is that one."""

    def __init__(self, engine: Any, output_rate: int | None = None) -> None:
        self.engine = engine
        self.sample_rate: int = engine.sample_rate
        self._at: int | None = None
        if output_rate is not None and output_rate != self.sample_rate and hasattr(engine, "synthesize_at"):
            self.sample_rate = self._at = output_rate

    async def stream(self, text: str, *, reply_id: int) -> AsyncIterator[np.ndarray]:
        if self._at is None:
            pcm = await self.engine.synthesize(text)
        else:
            pcm = await self.engine.synthesize_at(text, self._at)
        if len(pcm):
            yield pcm

    async def cancel(self, reply_id: int) -> None:
        return None

    async def end_reply(self, reply_id: int) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def open_session(engine: Any, *, call_id: str, output_rate: int | None = None) -> Any:
    """The engine's own streaming session when it has one, else a :class:`OneShotSession` (``output_rate``: the
    call's playback rate, see there)."""
    opener = getattr(engine, "open_session", None)
    if opener is not None:
        return await opener(call_id=call_id)
    return OneShotSession(engine, output_rate)
