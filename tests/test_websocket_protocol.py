"""telebridge.websocket: uvicorn's sans-I/O WebSocket protocol with flow control by what is queued and the
``telebridge.direct`` extension, under a real uvicorn server on loopback with a real WebSocket client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import websockets
from fakes.serve import serve_app

from telebridge.websocket import DIRECT, HIGH_WATER_BYTES, HIGH_WATER_MESSAGES, WebSocketProtocol
from telebridge.wsframes import FrameSplitter


def url(origin: str) -> str:
    return origin.replace("http", "ws") + "/"


@pytest.fixture(params=["frames read here", "permessage-deflate"])
def connect(request):  # noqa: ANN001, ANN201
    """A WebSocket client: without compression (as Twilio connects: the server reads the common frame itself,
    telebridge.wsframes), or with permessage-deflate (the library parses every frame)."""
    compression = None if request.param == "frames read here" else "deflate"

    def connect(origin: str):  # noqa: ANN202
        return websockets.connect(url(origin), compression=compression)

    connect.fast = compression is None
    return connect


def protocols(servers: list) -> list[WebSocketProtocol]:
    return [c for c in servers[0].server_state.connections if isinstance(c, WebSocketProtocol)]


async def until(check, timeout: float = 5.0) -> None:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_without_a_receiver_every_message_reaches_receive_in_order(connect):
    got: list[Any] = []

    async def app(scope, receive, send):  # noqa: ANN001
        assert DIRECT in scope["extensions"]
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            got.append(message.get("text", message.get("bytes")))
            await send({"type": "websocket.send", "text": f"ok {len(got)}"})

    servers: list = []
    async with serve_app(app, ws=WebSocketProtocol, servers=servers) as origin, connect(origin) as ws:
        sent: list[Any] = [f"text {i}" if i % 3 else bytes([i]) * 5 for i in range(30)]
        sent += ["é" * 40_000, b"\x00" * 70_000]  # (beyond what is read here: the library's, in order)
        for item in sent:
            await ws.send(item)
        await ws.ping(b"still there?")  # (a control frame: the library answers it)
        replies = [await ws.recv() for _ in sent]
        splitter = protocols(servers)[0]._splitter
        assert isinstance(splitter, FrameSplitter) if connect.fast else splitter is False
    assert got == sent
    assert replies == [f"ok {i + 1}" for i in range(len(sent))]


async def test_the_receiver_takes_messages_while_nothing_is_queued_and_what_it_hands_back_keeps_its_place(connect):
    taken: list[str] = []
    asked: list[str] = []
    received: list[tuple[str, Any]] = []
    go = asyncio.Event()

    def receiver(text: str) -> dict | None:
        asked.append(text)
        if text.startswith("hold"):  # (as the media route hands back a start: decoded, for the app's loop)
            return {"type": "websocket.receive", "text": text, "decoded": text.upper()}
        taken.append(text)
        return None

    async def app(scope, receive, send):  # noqa: ANN001
        await receive()
        await send({"type": "websocket.accept"})
        scope["extensions"][DIRECT]["set_receiver"](receiver)
        await go.wait()  # (not reading yet)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            received.append((message["text"], message.get("decoded")))
            await send({"type": "websocket.send", "text": "got " + message["text"]})

    async with serve_app(app, ws=WebSocketProtocol) as origin, connect(origin) as ws:
        await ws.send("m0")
        await until(lambda: taken == ["m0"])
        for text in ("hold 1", "m1", "m2", "hold 2"):
            await ws.send(text)
        await asyncio.sleep(0.2)
        # The first was handed back (queued); what came behind it was queued without asking the receiver.
        assert asked == ["m0", "hold 1"]
        go.set()
        replies = [await ws.recv() for _ in range(4)]
        await ws.send("m3")  # the queue is empty again: the receiver takes it
        await until(lambda: taken == ["m0", "m3"])
    assert received == [("hold 1", "HOLD 1"), ("m1", None), ("m2", None), ("hold 2", None)]
    assert replies == ["got hold 1", "got m1", "got m2", "got hold 2"]


async def test_a_failing_receiver_closes_its_connection_with_1011_and_no_other(connect):
    ends: list[Any] = []

    def receiver(text: str) -> dict | None:
        if text == "boom":
            raise RuntimeError("receiver bug")
        return {"type": "websocket.receive", "text": text} if text.startswith("echo") else None

    async def app(scope, receive, send):  # noqa: ANN001
        await receive()
        await send({"type": "websocket.accept"})
        scope["extensions"][DIRECT]["set_receiver"](receiver)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                ends.append(message.get("code"))
                return
            await send({"type": "websocket.send", "text": "echo " + message["text"]})

    async with serve_app(app, ws=WebSocketProtocol) as origin:
        async with connect(origin) as bad, connect(origin) as good:
            await bad.send("fine")
            await bad.send("boom")
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as info:
                await asyncio.wait_for(bad.recv(), 5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1011
            await good.send("fine")  # (the other connection is untouched: its receiver takes this)
            await good.send("echo me")  # ... and hands this to its app, which answers
            assert await asyncio.wait_for(good.recv(), 5) == "echo echo me"
        await until(lambda: len(ends) == 2)
    assert sorted(ends) == [1000, 1011] or ends[0] == 1011, ends


async def test_reading_stops_only_when_much_is_queued_and_starts_again_as_the_app_catches_up(connect):
    proceed = asyncio.Event()
    got: list[str] = []

    async def app(scope, receive, send):  # noqa: ANN001
        await receive()
        await send({"type": "websocket.accept"})
        await proceed.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            got.append(message["text"])
            if len(got) == total:
                await send({"type": "websocket.send", "text": "all"})

    servers: list = []
    total = 4 * HIGH_WATER_MESSAGES
    async with serve_app(app, ws=WebSocketProtocol, servers=servers) as origin, \
            connect(origin) as ws:
        for i in range(10):
            await ws.send(f"frame {i}")
        await until(lambda: protocols(servers) and protocols(servers)[0].queue.qsize() == 10)
        proto = protocols(servers)[0]
        assert not proto.read_paused  # (uvicorn's own protocol stops reading after each message)
        i = 10
        while not proto.read_paused:  # (in batches: each its own read)
            assert i < total - 40
            for _ in range(10):
                await ws.send(f"frame {i}")
                i += 1
            await asyncio.sleep(0.05)
        queued = proto.queue.qsize()
        assert HIGH_WATER_MESSAGES <= queued < HIGH_WATER_MESSAGES + 10
        for i in range(i, total):
            await ws.send(f"frame {i}")
        await asyncio.sleep(0.2)
        assert proto.queue.qsize() == queued  # it stopped reading: the rest waits in the socket
        proceed.set()
        assert await asyncio.wait_for(ws.recv(), 10) == "all"
        assert not proto.read_paused
    assert got == [f"frame {i}" for i in range(total)]


async def test_one_large_message_stops_reading_at_once(connect):
    proceed = asyncio.Event()
    sizes: list[int] = []

    async def app(scope, receive, send):  # noqa: ANN001
        await receive()
        await send({"type": "websocket.accept"})
        await proceed.wait()
        while len(sizes) < 2:
            message = await receive()
            sizes.append(len(message["bytes"]))
        await send({"type": "websocket.send", "text": "done"})

    servers: list = []
    async with serve_app(app, ws=WebSocketProtocol, servers=servers) as origin, \
            connect(origin) as ws:
        await ws.send(b"x" * HIGH_WATER_BYTES)
        await until(lambda: protocols(servers) and protocols(servers)[0].read_paused)
        await ws.send(b"y" * 10)
        proceed.set()
        assert await asyncio.wait_for(ws.recv(), 5) == "done"
    assert sizes == [HIGH_WATER_BYTES, 10]


async def test_send_text_sends_and_fails_once_the_client_is_gone(connect):
    failures: list[BaseException] = []
    gone = asyncio.Event()

    async def app(scope, receive, send):  # noqa: ANN001
        await receive()
        await send({"type": "websocket.accept"})
        send_text = scope["extensions"][DIRECT]["send_text"]
        for i in range(3):
            await send_text(f"hello {i}")
        assert (await receive())["type"] == "websocket.disconnect"
        try:
            await send_text("anyone?")
        except OSError as exc:  # (uvicorn's ClientDisconnected)
            failures.append(exc)
        gone.set()

    async with serve_app(app, ws=WebSocketProtocol) as origin:
        async with connect(origin) as ws:
            assert [await ws.recv() for _ in range(3)] == ["hello 0", "hello 1", "hello 2"]
        await asyncio.wait_for(gone.wait(), 5)
    assert len(failures) == 1
