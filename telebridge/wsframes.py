"""A client's WebSocket byte stream split at frame boundaries (RFC 6455 §5.2), sans-I/O: the server's protocol
(:mod:`telebridge.websocket`) reads the common frame itself and leaves every other one to the ``websockets``
library, whole and in order, so the library's parser is always at a frame boundary when it is fed.

The common frame is what a Twilio media stream sends 62 times a second per call: a final (FIN), masked text or
binary frame with no reserved bits, short enough to buffer. ``websockets`` parses it in a generator coroutine, a
few reads of a stream buffer each (~1 ms of CPU per call-second on this project's machine); here it is a header
check, a slice and the library's own C unmasking.
"""

from __future__ import annotations

from dataclasses import dataclass

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the library's pure-Python build
    from websockets.utils import apply_mask

TEXT, BINARY = 0x1, 0x2

FAST_LIMIT = 64 * 1024
"""The largest payload read here (bytes); longer frames go to the library as they arrive."""


@dataclass(frozen=True, slots=True)
class Message:
    """A whole message read here: ``opcode`` :data:`TEXT` or :data:`BINARY`, ``data`` unmasked; ``frame`` its
    bytes as they came (for the library, should the connection's state be one where the library must judge it)."""

    opcode: int
    data: bytes
    frame: bytes


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes of a frame for the library to parse (all of it, or the part that has arrived of a long one)."""

    data: bytes


class FrameSplitter:
    """Fed a client's bytes after the opening handshake, gives back, in order, :class:`Message` for each frame
    it reads itself -- final, masked, text or binary, no reserved bits (no extension in use), a payload of at most
    ``max_size`` (and :data:`FAST_LIMIT`) bytes -- and :class:`Raw` for every other frame's bytes: control frames,
    fragments, unmasked or oversized frames, reserved bits: the library parses them and answers, or fails the
    connection, as it would have. A readable frame is given back only once it has arrived whole; the start of one
    (up to its header) waits here."""

    def __init__(self, max_size: int | None = None) -> None:
        self.limit = FAST_LIMIT if max_size is None else min(max_size, FAST_LIMIT)
        self._buf = b""
        self._passthrough = 0  # bytes of the current frame still to go to the library as they arrive

    @property
    def at_boundary(self) -> bool:
        """Nothing of a frame is held here or owed to the library: the next byte starts a frame."""
        return not self._buf and not self._passthrough

    def feed(self, data: bytes) -> list[Message | Raw]:
        out: list[Message | Raw] = []
        if self._passthrough:
            n = min(self._passthrough, len(data))
            self._passthrough -= n
            out.append(Raw(data[:n]))
            data = data[n:]
            if not data:
                return out
        buf = self._buf + data if self._buf else data
        pos, end = 0, len(buf)
        limit = self.limit
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                head = 4
                if end - pos < head:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            elif length == 127:
                head = 10
                if end - pos < head:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            opcode = b0 & 0x0F
            if (b0 & 0xF0) != 0x80 or not (b1 & 0x80) or opcode not in (TEXT, BINARY) or length > limit:
                # Not ours: this frame's bytes go to the library, the rest as they come.
                size = head + (4 if b1 & 0x80 else 0) + length
                have = min(size, end - pos)
                out.append(Raw(bytes(buf[pos : pos + have])))
                self._passthrough = size - have
                pos += have
                if self._passthrough:
                    break
                continue
            size = head + 4 + length
            if end - pos < size:
                break
            mask = buf[pos + head : pos + head + 4]
            start = pos + head + 4
            out.append(Message(opcode, apply_mask(buf[start : start + length], mask), buf[pos : pos + size]))
            pos += size
        self._buf = bytes(buf[pos:]) if pos < end else b""
        return out


__all__ = ["BINARY", "FAST_LIMIT", "TEXT", "FrameSplitter", "Message", "Raw"]
