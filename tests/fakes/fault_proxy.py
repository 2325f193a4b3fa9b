"""A TCP proxy in front of a fake provider that misbehaves the way an overloaded provider (or its network) does.

The fakes speak the providers' documented protocols; this sits under them, at the TCP level, so the faults are the
ones a client meets in production and cannot negotiate away:

* :meth:`FaultProxy.stall` -- every connection open now goes silent both ways and stays open (a provider that
  stopped answering: a close handshake started on it never completes). What the client sends is read and dropped,
  so its end of the connection (EOF, reset) is still seen.
* ``stall_new = True`` -- new connections are accepted and then never answered (a handshake that outlasts the
  client's connect timeout).
* ``connect_delay = s`` -- new connections reach the fake only after ``s`` seconds (a connect that completes late,
  after the call that asked for it may have ended).
* ``refuse = status`` -- WebSocket upgrades are answered with that HTTP status (503, 429: a provider shedding
  load); plain HTTP requests (credential checks) still pass.
* :meth:`FaultProxy.drop` -- every connection open now is reset (the provider dropped the TCP connection mid-stream).

:attr:`FaultProxy.open_websockets` is the number of WebSocket connections whose client has not closed its end:
what must come back to its earlier level once the calls that opened them have ended. Runs on its own thread and
event loop, like :class:`~fakes.serve.ThreadedApp`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field

__all__ = ["FaultProxy"]


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    websocket: bool = False
    stalled: bool = False
    tasks: list[asyncio.Task] = field(default_factory=list)

    def abort(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None:
                w.transport.abort()


class FaultProxy:
    def __init__(self, target_origin: str) -> None:
        host, port = target_origin.removeprefix("http://").rsplit(":", 1)
        self.target = (host, int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.origin = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stall_new = False
        self.connect_delay = 0.0
        self.refuse: int | None = None
        self.websockets_opened = 0
        self._conns: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"fault-proxy-{self.origin}")

    # --- control (from any thread) --------------------------------------------------------------------------
    @property
    def open_websockets(self) -> int:
        return sum(1 for c in list(self._conns) if c.websocket)

    def stall(self) -> None:
        """Every connection open now: silent both ways from here on, kept open until its client closes it."""
        for conn in list(self._conns):
            conn.stalled = True

    def drop(self) -> None:
        """Reset every connection open now."""
        assert self._loop is not None
        done = threading.Event()

        def abort_all() -> None:
            for conn in list(self._conns):
                conn.abort()
            done.set()

        self._loop.call_soon_threadsafe(abort_all)
        done.wait(5)

    def reset_faults(self) -> None:
        self.stall_new = False
        self.connect_delay = 0.0
        self.refuse = None

    # --- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop_event = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, sock=self.sock)
        self._ready.set()
        await self._stop_event.wait()
        self._server.close()
        for conn in list(self._conns):
            conn.abort()
        await asyncio.sleep(0.05)

    # --- one connection -------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer, stalled=self.stall_new)
        self._conns.add(conn)
        try:
            first = await reader.read(65536)
            if not first:
                return
            conn.websocket = b"upgrade: websocket" in first.lower()
            self.websockets_opened += conn.websocket
            if conn.websocket and self.refuse is not None:
                body = b'{"err_code": "OVERLOADED", "err_msg": "Try again later."}'
                writer.write(b"HTTP/1.1 %d Refused\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (self.refuse, len(body), body))
                await writer.drain()
                return
            if conn.stalled:  # never answered: read (and drop) until the client gives up
                while await reader.read(65536):
                    pass
                return
            if self.connect_delay:
                deadline = time.monotonic() + self.connect_delay
                while (left := deadline - time.monotonic()) > 0:  # the client may give up meanwhile
                    try:
                        async with asyncio.timeout(left):
                            data = await reader.read(65536)
                    except TimeoutError:
                        break
                    if not data:
                        return
                    first += data
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            conn.upstream = up_writer
            up_writer.write(first)
            pipes = [asyncio.ensure_future(self._pipe(reader, up_writer, conn)),
                     asyncio.ensure_future(self._pipe(up_reader, writer, conn))]
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            if conn.stalled and not pipes[0].done():  # a silent provider does not hang up either
                await pipes[0]
            for p in pipes:
                p.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(conn)
            for w in (writer, conn.upstream):
                if w is not None:
                    w.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn) -> None:
        try:
            while data := await src.read(65536):
                if not conn.stalled:
                    dst.write(data)
                    await dst.drain()
        except OSError:
            pass
