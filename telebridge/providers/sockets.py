"""Closing a provider's WebSocket for sure: the close handshake is bounded, then the TCP connection is aborted.

Why: ``websockets``' ``close()`` waits for the provider's answer up to the connection's ``close_timeout`` and only
then aborts the transport itself. Cut short from outside (``wait_for`` timing out first, or the call's close being
cancelled), it leaves the transport open: the socket, and the connection's keep-alive task, stay until a later
ping notices -- tens of seconds after the call ended, and for every call that ended while the provider was
overloaded (found by ``bench/soak.py``; tests/test_provider_faults.py reproduces it).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["CLOSE_TIMEOUT", "abort", "close_socket"]

CLOSE_TIMEOUT = 1.0  # seconds a provider gets to answer our close frame


def abort(ws: Any) -> None:
    """Drop the TCP connection now (no-op once closed). The library's ``connection_lost`` follows on the next loop
    turn: it ends the socket's iteration and cancels its keep-alive task."""
    transport = getattr(ws, "transport", None)
    if transport is not None and not transport.is_closing():
        transport.abort()


async def close_socket(ws: Any, *, code: int = 1000, reason: str = "", timeout: float = CLOSE_TIMEOUT) -> None:
    """The close handshake, within ``timeout``; whatever happens -- no answer, an error, this task cancelled --
    the connection is closed when this returns (or raises CancelledError)."""
    try:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await (ws.close(code, reason) if code != 1000 or reason else ws.close())
    finally:
        abort(ws)
