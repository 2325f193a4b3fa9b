"""telebridge.wsframes: the frame splitter, against the websockets library parsing the same bytes alone.

The server's protocol reads the common frame (final, masked, text or binary, short) itself and hands the library
every other frame whole; what comes out -- the messages, the library's events and answers (pongs, closes), and
whether it failed the connection -- must be what the library alone makes of the same bytes, however they are cut
into reads."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from telebridge.wsframes import FAST_LIMIT, FrameSplitter, Message, Raw

MAX_SIZE = 3000  # (the library's max_size, small enough to try frames beyond it)


def library() -> ServerProtocol:
    return ServerProtocol(state=State.OPEN, max_size=MAX_SIZE)


def wire(frame: Frame, *, mask: bool = True, rsv1: bool = False) -> bytes:
    """The frame as a client sends it (masked unless told otherwise; a reserved bit if asked)."""
    data = frame.serialize(mask=mask)
    if rsv1:
        data = bytes([data[0] | 0x40]) + data[1:]
    return data


def events(conn: ServerProtocol) -> list[tuple]:
    """What the library has parsed since last asked: a final text or binary frame as a message, else the frame."""
    out: list[tuple] = []
    for event in conn.events_received():
        if event.opcode in (Opcode.TEXT, Opcode.BINARY) and event.fin:  # (a whole message)
            out.append(("message", int(event.opcode), bytes(event.data)))
        else:
            out.append(("frame", event.opcode, bytes(event.data), event.fin))
    return out


def outcome(conn: ServerProtocol, got: list[tuple]) -> tuple[list, bytes, str | None]:
    """The messages and events, what the library sends back, and its failure."""
    return got, b"".join(conn.data_to_send()), type(conn.parser_exc).__name__ if conn.parser_exc else None


def alone(stream: bytes, cuts: list[int]) -> tuple[list, bytes, str | None]:
    """The library alone, fed the stream in the given pieces."""
    conn = library()
    got: list[tuple] = []
    for piece in pieces(stream, cuts):
        conn.receive_data(piece)
        got += events(conn)
    return outcome(conn, got)


def split(stream: bytes, cuts: list[int]) -> tuple[list, bytes, str | None]:
    """The same bytes as the server's protocol takes them: the splitter, its messages where the library's state
    allows, everything else to the library (telebridge.websocket.WebSocketProtocol.data_received)."""
    conn = library()
    splitter = FrameSplitter(MAX_SIZE)
    got: list[tuple] = []
    for piece in pieces(stream, cuts):
        for item in splitter.feed(piece):
            if type(item) is Message and conn.state is State.OPEN and conn.current_size is None:
                got.append(("message", item.opcode, item.data))
            else:
                conn.receive_data(item.data if type(item) is Raw else item.frame)
                got += events(conn)
    return outcome(conn, got)


def pieces(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in zip(points, points[1:], strict=False)]


payloads = st.binary(max_size=300)
common = st.one_of(
    payloads.map(lambda d: wire(Frame(Opcode.BINARY, d))),
    st.text(max_size=120).map(lambda t: wire(Frame(Opcode.TEXT, t.encode()))),
)
odd = st.one_of(
    payloads.map(lambda d: wire(Frame(Opcode.PING, d[:125]))),
    payloads.map(lambda d: wire(Frame(Opcode.PONG, d[:125]))),
    st.tuples(payloads, payloads).map(  # a fragmented message
        lambda p: wire(Frame(Opcode.TEXT, b"a" + p[0], fin=False)) + wire(Frame(Opcode.CONT, p[1]))),
    payloads.map(lambda d: wire(Frame(Opcode.CONT, d))),  # a continuation out of nowhere
    payloads.map(lambda d: wire(Frame(Opcode.BINARY, d), mask=False)),  # unmasked: the client must mask
    payloads.map(lambda d: wire(Frame(Opcode.TEXT, d), rsv1=True)),  # a reserved bit, no extension
    st.integers(MAX_SIZE + 1, MAX_SIZE + 500).map(lambda n: wire(Frame(Opcode.BINARY, b"z" * n))),  # too long
    st.integers(126, 2000).map(lambda n: wire(Frame(Opcode.BINARY, b"m" * n))),  # a 16-bit length, in bounds
    st.just(wire(Frame(Opcode.CLOSE, b"\x03\xe8bye"))),
)
streams = st.lists(st.one_of(common, common, common, odd), max_size=25).map(b"".join)


@settings(max_examples=int(os.environ.get("WSFRAMES_EXAMPLES", "400")), deadline=None)
@given(streams, st.lists(st.integers(0, 100_000), max_size=12))
def test_the_splitter_and_the_library_make_of_any_stream_what_the_library_makes_of_it_alone(stream, cuts):
    assert split(stream, cuts) == alone(stream, cuts)


def test_a_frame_is_read_here_only_when_whole_and_common():
    splitter = FrameSplitter(MAX_SIZE)
    text = wire(Frame(Opcode.TEXT, b'{"event":"media"}'))
    assert splitter.feed(text[:5]) == []  # (the start of a frame waits)
    assert not splitter.at_boundary
    (message,) = splitter.feed(text[5:])
    assert (message.opcode, message.data, message.frame) == (0x1, b'{"event":"media"}', text)
    assert splitter.at_boundary
    ping = wire(Frame(Opcode.PING, b"hi"))
    assert splitter.feed(ping) == [Raw(ping)]
    big = wire(Frame(Opcode.BINARY, b"b" * (MAX_SIZE + 10)))  # (beyond max_size: as it arrives, for the library)
    assert splitter.feed(big[:100]) == [Raw(big[:100])]
    assert splitter.feed(big[100:] + text) == [Raw(big[100:]), Message(0x1, b'{"event":"media"}', text)]
    assert FrameSplitter().limit == FAST_LIMIT
