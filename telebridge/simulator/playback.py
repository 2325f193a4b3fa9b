"""Twilio's outbound playback buffer, modelled sans-I/O with an explicit clock.

Why this exists
---------------
A bidirectional Media Stream does not play server audio the moment it arrives: Twilio appends every outbound
``media`` payload to a per-call buffer and plays it at 8000 samples per second. ``mark`` messages sit in that
buffer between audio bytes and are echoed back when playback reaches them; ``clear`` drops everything not yet
played and echoes *every* pending mark at once. A server's barge-in logic and its record of "what the caller
actually heard" depend entirely on these semantics, so the simulator reproduces them here, deterministically:
nothing in this module reads a clock or touches a socket. The owner calls :meth:`PlaybackBuffer.advance` with
the number of samples that elapsed (160 per 20 ms tick) and gets back the bytes that reached the caller's ear
and the marks that playback passed.

Positions are counted in samples (= μ-law bytes) along the stream of audio the server sent. A mark is pinned
at the stream position it was queued at; it is reached as soon as playback has consumed everything before it,
including when it was queued on an empty buffer (Twilio echoes such a mark straight away).
"""

from __future__ import annotations

from collections import deque
from typing import Final

__all__ = ["PlaybackBuffer", "SILENCE_BYTE", "TWILIO_MAX_BUFFER_SAMPLES"]

SILENCE_BYTE: Final = 0xFF
"""μ-law code for zero amplitude; what the caller hears when the buffer has run dry."""

TWILIO_MAX_BUFFER_SAMPLES: Final = 10 * 60 * 8000
"""Twilio discards outbound audio past ten minutes buffered (warning 31931)."""

# Compact the backing bytearray once this many played bytes sit at its front; keeps `advance` O(n) amortised.
_COMPACT_AT: Final = 64 * 1024


class PlaybackBuffer:
    """Outbound audio buffer of one Twilio stream: media, marks, clear, and playback by explicit steps."""

    def __init__(self, max_buffered_samples: int = TWILIO_MAX_BUFFER_SAMPLES) -> None:
        if max_buffered_samples <= 0:
            raise ValueError("max_buffered_samples must be positive")
        self._max = max_buffered_samples
        self._data = bytearray()
        self._read = 0  # index in _data of the next byte to play
        self._base = 0  # stream position of _data[0]
        self._marks: deque[tuple[int, str]] = deque()  # (stream position, name), positions non-decreasing
        self._played = 0
        self._elapsed = 0
        self._discarded = 0

    # ----------------------------------------------------------------------------------------------------------
    # What the server sends
    # ----------------------------------------------------------------------------------------------------------

    def media(self, payload: bytes) -> None:
        """Append μ-law bytes to the end of the buffer.

        Bytes beyond the buffer limit are dropped (counted in :attr:`discarded_samples`), as Twilio does past
        ten minutes of buffered audio.
        """
        room = self._max - self.buffered_samples
        if room < len(payload):
            self._discarded += len(payload) - max(room, 0)
            payload = payload[: max(room, 0)]
        self._data += payload

    def mark(self, name: str) -> None:
        """Queue a mark at the current end of the buffer (after all audio sent so far)."""
        self._marks.append((self._end, name))

    def clear(self) -> list[str]:
        """Drop all unplayed audio; return the names of every pending mark, in the order they were queued.

        Twilio echoes all of them at once, whether or not their audio would have played.
        """
        self._base = self._end
        self._data = bytearray()
        self._read = 0
        names = [name for _, name in self._marks]
        self._marks.clear()
        return names

    # ----------------------------------------------------------------------------------------------------------
    # The clock
    # ----------------------------------------------------------------------------------------------------------

    def advance(self, n_samples: int) -> tuple[bytes, list[str]]:
        """Play ``n_samples``; return the bytes played and the marks reached, in order.

        The returned bytes are always ``n_samples`` long: buffered audio first, then ``0xFF`` silence once the
        buffer runs dry. Marks reached include those sitting exactly where playback stops.
        """
        if n_samples < 0:
            raise ValueError("n_samples must be non-negative")
        take = min(n_samples, len(self._data) - self._read)
        out = bytes(self._data[self._read : self._read + take])
        self._read += take
        self._played += take
        self._elapsed += n_samples
        if take < n_samples:
            out += bytes([SILENCE_BYTE]) * (n_samples - take)
        position = self._base + self._read
        reached: list[str] = []
        while self._marks and self._marks[0][0] <= position:
            reached.append(self._marks.popleft()[1])
        if self._read >= _COMPACT_AT:
            del self._data[: self._read]
            self._base += self._read
            self._read = 0
        return out, reached

    # ----------------------------------------------------------------------------------------------------------
    # State
    # ----------------------------------------------------------------------------------------------------------

    @property
    def _end(self) -> int:
        return self._base + len(self._data)

    @property
    def buffered_samples(self) -> int:
        """Audio queued but not yet played."""
        return len(self._data) - self._read

    @property
    def played_samples(self) -> int:
        """Server audio played so far (silence padding excluded)."""
        return self._played

    @property
    def elapsed_samples(self) -> int:
        """Total samples the clock has advanced, padding included."""
        return self._elapsed

    @property
    def discarded_samples(self) -> int:
        """Audio dropped because the buffer was full."""
        return self._discarded

    @property
    def pending_marks(self) -> list[str]:
        """Names of marks not yet echoed, in order."""
        return [name for _, name in self._marks]
