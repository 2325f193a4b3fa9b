"""A TTS session closed while one of its sentences is (re)connecting must not leave a socket behind.

Found by ``bench/soak.py --trace objects``: under load a reply still streaming when its call ended reconnected the
closed Deepgram session, and that socket, its reader task and its keep-alive task lived on after the call (one
file descriptor and two tasks per occurrence). The sockets here are stand-ins: what matters is who closes them.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from telebridge.config import TTS
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import ProviderError
from telebridge.providers.health import ProviderHealth
from telebridge.providers.tts import cartesia as cartesia_tts
from telebridge.providers.tts import deepgram as dg_tts
from telebridge.providers.tts import elevenlabs as el_tts


class Socket:
    """A socket nobody talks on: it only records being closed (and ends its iteration then)."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.state = None

    async def close(self) -> None:
        self.closed.set()

    async def send(self, data: object) -> None:
        raise ConnectionError("not a real socket")

    def __aiter__(self) -> Socket:
        return self

    async def __anext__(self) -> object:
        await self.closed.wait()
        raise StopAsyncIteration


def _ctx() -> ProviderContext:
    return ProviderContext(settings=SimpleNamespace(), pool=None, health=ProviderHealth(), phone=True)


async def test_a_deepgram_session_closed_while_connecting_closes_the_new_socket(monkeypatch) -> None:
    release, sockets = asyncio.Event(), []

    async def slow_connect(engine: object, url: str) -> Socket:
        await release.wait()
        sockets.append(Socket())
        return sockets[-1]

    monkeypatch.setattr(dg_tts, "ws_connect", slow_connect)
    session = dg_tts.DeepgramSession(dg_tts.create(TTS.Deepgram(api_key="k"), _ctx()), "CAtest")
    connecting = asyncio.create_task(session.connect())
    await asyncio.sleep(0)
    await session.aclose()  # the call ends while a sentence is reconnecting
    release.set()
    with pytest.raises(ProviderError, match="session closed"):
        await connecting
    assert sockets[0].closed.is_set() and session._reader is None and session._ws is None
    with pytest.raises(ProviderError, match="session closed"):
        await session.connect()  # and a closed session never opens another
    assert len(sockets) == 1


async def test_a_sentence_under_way_when_the_call_closes_ends_quietly(monkeypatch) -> None:
    release = asyncio.Event()

    async def slow_connect(engine: object, url: str) -> Socket:
        await release.wait()
        return Socket()

    monkeypatch.setattr(dg_tts, "ws_connect", slow_connect)
    engine = dg_tts.create(TTS.Deepgram(api_key="k"), _ctx())
    session = dg_tts.DeepgramSession(engine, "CAtest")
    chunks: list[object] = []

    async def speak() -> None:
        async for chunk in session.stream("Hello there.", reply_id=1):
            chunks.append(chunk)

    task = asyncio.create_task(speak())
    await asyncio.sleep(0)
    await session.aclose()
    release.set()
    await asyncio.wait_for(task, 5)  # no error: the sentence is moot, not a provider failure
    assert chunks == [] and engine.health.snapshot().get("tts.deepgram", {}).get("errors", 0) == 0


def _open_when_released(engine: Any) -> tuple[asyncio.Event, list[Socket]]:
    """Make ``engine``'s socket connect hang until the returned event is set; the sockets it opened are listed."""
    release, sockets = asyncio.Event(), []

    async def slow_open() -> Socket:
        await release.wait()
        sockets.append(Socket())
        return sockets[-1]

    engine.open_socket = slow_open
    return release, sockets


async def test_a_cartesia_session_closed_while_connecting_closes_the_new_socket() -> None:
    engine = cartesia_tts.create(TTS.Cartesia(api_key="k"), _ctx())
    release, sockets = _open_when_released(engine)
    session = cartesia_tts.CartesiaSession(engine, "CAtest")
    connecting = asyncio.create_task(session.connect())
    await asyncio.sleep(0)
    await session.aclose()
    release.set()
    with pytest.raises(ProviderError):
        await connecting
    assert sockets[0].closed.is_set() and session._link is None


async def test_an_elevenlabs_connect_completing_after_the_call_gave_up_closing_closes_its_socket() -> None:
    """A barge-in reopens the socket in the background; the call ends meanwhile, and its close (waiting for that
    connect) is cut short by the call's close budget. The connect completing later must not keep its socket."""
    engine = el_tts.create(TTS.ElevenLabs(api_key="k", voice=TTS.Voice(id="V1", name="T", category="premade")),
                           _ctx())
    release, sockets = _open_when_released(engine)
    session = el_tts.ElevenLabsSession(engine, "CAtest")
    connecting = asyncio.create_task(session.connect())
    await asyncio.sleep(0)
    closing = asyncio.create_task(session.aclose())
    await asyncio.sleep(0.01)
    closing.cancel()  # CallSpeech.aclose's budget ran out while the close waited for the connect
    await asyncio.gather(closing, return_exceptions=True)
    release.set()
    with pytest.raises(ProviderError, match="session closed"):
        await connecting
    assert sockets[0].closed.is_set() and session._conn is None
