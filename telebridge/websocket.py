"""The server's WebSocket protocol: uvicorn's sans-I/O one (the opening handshake, control frames and closing by
the ``websockets`` library), with three changes for Twilio's media streams, where 62 small messages a second
arrive on every call.

* **Flow control by what is queued**, not per message. uvicorn stops reading the socket after every message and
  starts again when the app takes it: two changes to the event loop's registrations per message. Here reading
  stops only while the app has :data:`HIGH_WATER_BYTES` or :data:`HIGH_WATER_MESSAGES` waiting (a single large
  message stops it at once, as before), and starts again once it is down to :data:`LOW_WATER_MESSAGES` with less
  than a quarter of the bytes.
* **The common frame read here**: after the opening handshake, a :class:`~.wsframes.FrameSplitter` reads final,
  masked, short text and binary frames itself and hands the library every other frame whole and in order (see
  :mod:`.wsframes`); with an extension such as permessage-deflate in use, the library reads everything.
* **The** ``telebridge.direct`` **ASGI extension**, for an app that can take a text message where it is parsed:
  ``scope["extensions"]["telebridge.direct"]`` holds ``set_receiver(fn)`` and ``send_text(text)``. Once a
  receiver is set, every text message that arrives while the receive queue is empty goes to ``fn(text)`` inside
  the protocol's ``data_received`` (no queue, no task switch, no ASGI message): ``fn`` returns ``None`` when it
  has taken the message, or the ASGI message to queue for ``receive()`` (which keeps the order: a message that
  arrives while anything is queued is queued behind it, without asking ``fn``). A receiver that raises closes the
  connection (1011) and the app's ``receive()`` gets ``websocket.disconnect``. ``send_text`` is the ASGI
  ``websocket.send`` of a text message without building one. ``set_receiver(None)`` stops it. Apps that do not
  use the extension (the realtime API, the console) get their messages through ASGI as before.

Measured on this project's 2-core machine by ``bench/cpu_per_call.py --scenarios baseline,baseline-direct`` (a bare
sink that parses each Twilio frame's JSON, 50 frames a second per call; server CPU per call-second, two runs): on
uvicorn's protocol 6.72 and 6.04 ms at 25 calls, 4.72 and 4.42 at 50; on this one, frames taken where they are
parsed, 4.12 and 3.72, 3.00 and 3.28.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .wsframes import TEXT, FrameSplitter, Message, Raw

log = logging.getLogger("telebridge.websocket")

DIRECT = "telebridge.direct"
"""The ASGI extension's key in ``scope["extensions"]``."""

HIGH_WATER_MESSAGES = 64
"""Messages waiting for the app at which reading stops (about 1.3 s of one call's media frames)."""
HIGH_WATER_BYTES = 64 * 1024
"""Bytes of messages waiting for the app at which reading stops."""
LOW_WATER_MESSAGES = 8
"""Messages waiting at or under which reading starts again (with under a quarter of the bytes)."""

Receiver = Callable[[str], "dict[str, Any] | None"]


def _message_size(message: dict[str, Any]) -> int:
    data = message.get("text")
    if data is None:
        data = message.get("bytes")
    return len(data) if data is not None else 0


try:
    from uvicorn.protocols.utils import ClientDisconnected
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.exceptions import InvalidState
    from websockets.protocol import State
except ImportError:  # (uvicorn before its sans-I/O protocol: the server falls back to its default one)
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]


if WebSocketsSansIOProtocol is not None:

    class WebSocketProtocol(WebSocketsSansIOProtocol):  # type: ignore[misc,valid-type]
        """uvicorn's ``websockets-sansio`` protocol with flow control by what is queued, the common frame read
        here, and the ``telebridge.direct`` extension (see the module docstring)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._receiver: Receiver | None = None
            self._queued_bytes = 0
            # Frames after the opening handshake (see data_received): None until it has come, False if the library
            # is to parse them all.
            self._splitter: FrameSplitter | None | bool = None

        # --- bytes in ---------------------------------------------------------------------------------------
        def data_received(self, data: bytes) -> None:
            """The library parses the opening handshake; after it, a :class:`~.wsframes.FrameSplitter` reads the
            common frame here and hands the library every other one, whole and in order (see :mod:`.wsframes`)."""
            splitter = self._splitter
            if splitter is None:  # (uvicorn hands over the upgrade request, and nothing else, in one piece)
                super().data_received(data)
                self._splitter = self._after_handshake()
                return
            if splitter is False:
                super().data_received(data)
                return
            conn = self.conn
            for item in splitter.feed(data):  # type: ignore[union-attr]
                if type(item) is Message and conn.state is State.OPEN and conn.current_size is None:
                    self._to_app(item.opcode == TEXT, item.data)
                else:  # the library's, or a message the library must judge (a state the fast path does not know)
                    super().data_received(item.data if type(item) is Raw else item.frame)  # type: ignore[union-attr]

        def _after_handshake(self) -> FrameSplitter | bool:
            """A splitter for what follows the opening handshake, if the library's parser waits at a frame's start
            (it has parsed the request and holds nothing more) and nothing it reads alters a frame (no extension
            such as permessage-deflate is in use); else False: the library parses everything."""
            conn = self.conn
            reader = getattr(conn, "reader", None)
            if (not self.handshake_initiated or conn.handshake_exc is not None or conn.parser_exc is not None
                    or reader is None or getattr(reader, "buffer", b"?") or not hasattr(conn, "current_size")):
                return False
            response = getattr(self, "response", None)
            if response is None or response.status_code != 101 or conn.extensions:
                return False
            return FrameSplitter(self.config.ws_max_size)

        # --- the extension ----------------------------------------------------------------------------------
        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)
            if scope is not None:  # (an accepted upgrade: the app's task starts after this)
                scope["extensions"][DIRECT] = {"set_receiver": self._set_receiver, "send_text": self._send_text}

        def _set_receiver(self, receiver: Receiver | None) -> None:
            self._receiver = receiver

        async def _send_text(self, text: str) -> None:
            if not self.writable.is_set():
                await self.writable.wait()
            if self.disconnected or self.close_sent or not self.handshake_complete:
                raise ClientDisconnected()
            try:
                self.conn.send_text(text.encode())
            except InvalidState:
                raise ClientDisconnected() from None
            self.transport.write(b"".join(self.conn.data_to_send()))

        def _receiver_failed(self) -> None:
            log.exception("WebSocket receiver failed: closing the connection")
            self._receiver = None
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1011})
            if not self.transport.is_closing():
                try:
                    self.conn.send_close(1011, "internal error")
                except InvalidState:  # (closing already)
                    pass
                self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            if self.read_paused:
                self.read_paused = False
                self.transport.resume_reading()
            if self.close_timer is None:
                self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

        # --- incoming messages ------------------------------------------------------------------------------
        def send_receive_event_to_app(self) -> None:
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            self.frames = []
            self._to_app(self.curr_msg_data_type == "text", data)

        def _to_app(self, text_message: bool, data: bytes) -> None:
            """A whole message, to the receiver or the queue."""
            if self.close_sent:
                # The app is past `websocket.close`: the message is dropped (reads go on until the peer's close).
                return
            message: dict[str, Any] | None
            if text_message:
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    self.logger.exception("Invalid UTF-8 sequence received from client.")
                    self.conn.send_close(1007)
                    self.handle_parser_exception()
                    return
                receiver = self._receiver
                if receiver is not None and self.queue.empty():
                    try:
                        message = receiver(text)
                    except Exception:
                        self._receiver_failed()
                        return
                    if message is None:
                        return
                else:
                    message = {"type": "websocket.receive", "text": text}
            else:
                message = {"type": "websocket.receive", "bytes": data}
            self.queue.put_nowait(message)  # type: ignore[arg-type]
            self._queued_bytes += _message_size(message)
            if not self.read_paused and (self.queue.qsize() >= HIGH_WATER_MESSAGES
                                         or self._queued_bytes >= HIGH_WATER_BYTES):
                self.read_paused = True
                self.transport.pause_reading()

        async def receive(self) -> Any:
            message = await self.queue.get()
            self._queued_bytes = max(0, self._queued_bytes - _message_size(message))  # type: ignore[arg-type]
            if (self.read_paused and self.queue.qsize() <= LOW_WATER_MESSAGES
                    and self._queued_bytes < HIGH_WATER_BYTES // 4):
                self.read_paused = False
                self.transport.resume_reading()
            return message

else:  # pragma: no cover - uvicorn too old for it
    WebSocketProtocol = None  # type: ignore[assignment,misc]


def websocket_protocol() -> Any:
    """What the server gives uvicorn as its ``ws`` protocol: :class:`WebSocketProtocol`, or uvicorn's default
    ``websockets`` protocol where uvicorn has no sans-I/O one."""
    return WebSocketProtocol if WebSocketProtocol is not None else "websockets"


__all__ = ["DIRECT", "HIGH_WATER_BYTES", "HIGH_WATER_MESSAGES", "LOW_WATER_MESSAGES", "WebSocketProtocol",
           "websocket_protocol"]
