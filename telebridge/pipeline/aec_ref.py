"""The echo canceller's reference at the full rate: the latest stretch of what the caller heard, block by block.

One buffer for the parts that look back into the reference -- the path tracker (its correlators' half-rate reference
of the delay range, made only for a hop that is correlated) and the adaptive filter (the frames of its partitions,
transformed only while it is in use) -- read as views, so that a block of reference costs one copy, whoever needs it
later. Used by :class:`~.aec.EchoCanceller`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Reference"]


class Reference:
    """The newest ``span`` samples of the reference (at least), pushed ``block`` samples at a time; older ones are
    forgotten. A linear buffer, moved back to its start when full (every ``slack`` blocks): nothing is shifted per
    block. A silent block once the whole span is silent is no write at all (the span holds zeros already)."""

    def __init__(self, block: int, span: int, slack: int = 16) -> None:
        self.block = block
        self.span = span
        self.buf = np.zeros(span + slack * block)  # (the same array for the reference's lifetime: views of it stay)
        self.end = span  # where the newest sample ends in ``buf``
        self.pos = 0  # samples pushed so far (every block, silent or not)
        self._zeros = span  # trailing silent samples

    def push(self, x: np.ndarray | None) -> None:
        """The newest block (``None``: a silent one)."""
        b = self.block
        self.pos += b
        if x is None:
            if self._zeros >= self.span:
                return
            self._zeros += b
        else:
            self._zeros = 0
        buf, end = self.buf, self.end
        if end + b > len(buf):
            buf[: self.span] = buf[end - self.span : end]
            end = self.span
        buf[end : end + b] = 0.0 if x is None else x
        self.end = end + b

    def push_silence(self, blocks: int) -> None:
        """``blocks`` silent blocks (once the span is silent, only counted)."""
        while blocks > 0 and self._zeros < self.span:
            self.push(None)
            blocks -= 1
        self.pos += blocks * self.block

    def last(self, n: int) -> np.ndarray:
        """The newest ``n`` samples (``n`` at most ``span``), oldest first: a view, valid until the next push."""
        return self.buf[self.end - n : self.end]
