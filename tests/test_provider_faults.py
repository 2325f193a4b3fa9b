"""Calls that end while their cloud providers misbehave leave no socket and no task behind.

Found in a soak run (bench/soak.py against bench/cloud_fakes.py): after the fake providers were overloaded, a few
asyncio tasks and sockets to the fake stayed open with no call live. Here each call of the real server (LiveServer,
the simulator playing Twilio) reaches the providers' fakes (Deepgram live STT, and Deepgram Aura, Cartesia or
ElevenLabs TTS) through its own :class:`~fakes.fault_proxy.FaultProxy`, which breaks the connection the way an
overloaded provider does: it goes silent mid-call (so the close handshake at the end of the call never completes),
it resets the connection mid-stream and then stops answering handshakes, it never answers a handshake at all, or it
refuses the upgrade with 503 / 429. The calls run side by side and end during their faults; then the server's
asyncio tasks (``/v1/health``'s ``process`` block) and the WebSockets still open at each proxy must come back to
where they were before the calls, within a few seconds -- not when some keep-alive timer fires twenty seconds later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import AUTH_TOKEN, LiveServer, finished_call
from fakes.cartesia import FakeCartesia
from fakes.deepgram import FakeDeepgram
from fakes.elevenlabs import FakeElevenLabs
from fakes.fault_proxy import FaultProxy
from fakes.serve import ThreadedApp
from telebridge.audio.g711 import ulaw_decode_float
from telebridge.providers.stt import deepgram as dg_stt
from telebridge.providers.tts import cartesia as cartesia_tts
from telebridge.providers.tts import deepgram as dg_tts
from telebridge.providers.tts import elevenlabs as el_tts
from telebridge.simulator import simulate_call
from telebridge.simulator.script import LineEcho

AGENT = Path(__file__).parent / "agents" / "fault_agent.py"
DG_KEY, CARTESIA_KEY, EL_KEY = "dg-fault-key-0123456789", "sk_car_fault_0123456789", "el-fault-key-0123456789"
CALL_SECONDS = 4.0
SETTLE = 6.0  # seconds the sockets and tasks get to go once the calls have ended (a close is bounded at ~1 s)


@dataclass
class Rig:
    server: LiveServer
    origins: dict[str, str]  # provider → the fake's origin
    proxies: list[FaultProxy]

    def proxy(self, provider: str) -> FaultProxy:
        proxy = FaultProxy(self.origins[provider]).start()
        self.proxies.append(proxy)
        return proxy


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    fakes = {"deepgram": FakeDeepgram(DG_KEY), "cartesia": FakeCartesia(api_key=CARTESIA_KEY),
             "elevenlabs": FakeElevenLabs(api_key=EL_KEY)}
    apps = {name: ThreadedApp(fake.app).start() for name, fake in fakes.items()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPGRAM_API_KEY", DG_KEY)
        mp.setenv("CARTESIA_API_KEY", CARTESIA_KEY)
        mp.setenv("ELEVENLABS_API_KEY", EL_KEY)
        # A stalled handshake or a refused one costs a call seconds, not tens of them.
        for cls in (dg_stt.DeepgramSTT, dg_tts.DeepgramTTS, cartesia_tts.CartesiaTTS):
            mp.setattr(cls, "connect_timeout", 1.0)
        mp.setattr(el_tts, "CONNECT_TIMEOUT", 1.0)
        server = LiveServer(agent=str(AGENT)).start()
        rig = Rig(server, {name: app.origin for name, app in apps.items()}, [])
        try:
            yield rig
        finally:
            server.stop()
            for proxy in rig.proxies:
                proxy.stop()
            for app in apps.values():
                app.stop()


def health_tasks(server: LiveServer) -> int:
    return httpx.get(server.url + "/v1/health", timeout=10).json()["process"]["asyncio_tasks"]


def lingering(server: LiveServer) -> list[str]:
    """The server loop's tasks, by coroutine: what a failure message shows."""
    assert server.loop is not None
    return sorted(f"{t.get_name()}={t.get_coro().__qualname__}" for t in asyncio.all_tasks(server.loop))


async def run_call(rig: Rig, stt: FaultProxy, tts_kind: str, tts: FaultProxy,
                   fault: Callable[[], None] | None = None, *, after_sockets: int = 2, echo: LineEcho | None = None,
                   **custom: str) -> str:
    """One call through ``stt`` / ``tts`` (over a line that echoes the agent back, with ``echo``); ``fault`` runs
    once ``after_sockets`` WebSockets were opened through them (and the greeting had a moment to start), and the
    caller hangs up at ``CALL_SECONDS``."""
    custom.update(stt_url=stt.origin, tts=tts_kind, tts_url=tts.origin)
    call = asyncio.create_task(simulate_call(rig.server.url, script=[], auth_token=AUTH_TOKEN, duration=CALL_SECONDS,
                                             transcribe=False, custom_parameters=custom, echo=echo))
    if fault is not None:
        proxies = {stt, tts}
        deadline = time.monotonic() + CALL_SECONDS
        while sum(p.websockets_opened for p in proxies) < after_sockets and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        fault()
    sim = await call
    await finished_call(rig.server, sim.call_sid)
    return sim.call_sid


async def warm_up(rig: Rig) -> None:
    """One clean call per TTS provider, and one that falls back to the embedded Whisper and Piper: what a call
    creates for good (engines, pools, the VAD) exists before the baseline is read."""
    clean = rig.proxy("deepgram")
    refused = rig.proxy("deepgram")
    refused.refuse = 503
    await asyncio.gather(
        run_call(rig, clean, "deepgram", clean),
        run_call(rig, clean, "cartesia", rig.proxy("cartesia")),
        run_call(rig, clean, "elevenlabs", rig.proxy("elevenlabs")),
        run_call(rig, refused, "deepgram", refused),
    )


async def test_calls_ending_during_provider_faults_leave_no_sockets_or_tasks(rig: Rig) -> None:
    await warm_up(rig)
    deadline = time.monotonic() + SETTLE
    while any(p.open_websockets for p in rig.proxies) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    before = health_tasks(rig.server)
    before_tasks = lingering(rig.server)
    assert not any(p.open_websockets for p in rig.proxies)

    calls = []
    # 1. Deepgram (both ways) goes silent mid-call: the CloseStream, Close and close handshakes go unanswered.
    dg = rig.proxy("deepgram")
    calls.append(run_call(rig, dg, "deepgram", dg, dg.stall))
    # 2./3. The TTS socket goes silent mid-call (ElevenLabs, Cartesia); Deepgram STT stays healthy.
    for kind in ("elevenlabs", "cartesia"):
        stt, tts = rig.proxy("deepgram"), rig.proxy(kind)
        calls.append(run_call(rig, stt, kind, tts, tts.stall))
    # 4. Deepgram resets both sockets mid-call and then never answers a handshake: the call ends reconnecting.
    dropped = rig.proxy("deepgram")

    def drop_then_stall() -> None:
        dropped.stall_new = True
        dropped.drop()

    calls.append(run_call(rig, dropped, "deepgram", dropped, drop_then_stall))
    # 5. Deepgram never answers a handshake: the call ends while its providers are still connecting.
    silent = rig.proxy("deepgram")
    silent.stall_new = True
    calls.append(run_call(rig, silent, "deepgram", silent))
    # 6. Deepgram refuses the upgrades mid-call (after a reset) with 429.
    refusing = rig.proxy("deepgram")

    def drop_then_refuse() -> None:
        refusing.refuse = 429
        refusing.drop()

    calls.append(run_call(rig, refusing, "deepgram", refusing, drop_then_refuse))
    await asyncio.gather(*calls)
    assert sum(p.websockets_opened for p in rig.proxies[-8:]) >= 8  # the faults met live sockets

    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        open_sockets = {p.origin: p.open_websockets for p in rig.proxies if p.open_websockets}
        tasks = health_tasks(rig.server)
        if not open_sockets and tasks <= before:
            break
        await asyncio.sleep(0.1)
    extra = sorted(set(lingering(rig.server)) - set(before_tasks))
    assert not open_sockets, f"sockets still open at the proxies {open_sockets}; tasks beyond the baseline: {extra}"
    assert tasks <= before, f"{tasks} asyncio tasks after the calls, {before} before: {extra}"
    assert rig.server.call_tasks() == []


async def test_the_stt_stream_gets_the_callers_mulaw_as_received_unless_the_echo_canceller_changed_it(
        rig: Rig, monkeypatch) -> None:
    """Twilio's μ-law bytes reach the Deepgram stream with each frame (it sends them as they are instead of
    re-encoding the decoded frame). With the echo canceller on, the STT must hear the cancelled audio: frames the
    canceller changed (the greeting's echo, once it has found it on this speakerphone line) come without their
    bytes and are re-encoded; frames it left as they were (before the greeting, or the echo not yet found) come
    with them, and those bytes are the audio the STT hears."""
    seen: dict[str, list[tuple[bool, bool]]] = {}  # per call, per feed: (bytes given, the bytes are the audio heard)
    feed = dg_stt.DeepgramStream.feed

    def spy(self: dg_stt.DeepgramStream, pcm: object, ulaw: bytes | None = None) -> None:
        # (Decoded, not re-encoded, to compare: μ-law has two codes for zero, 0x7F and 0xFF, and an encoder makes
        # only one; a line that carries both -- this echo line does -- sends bytes no re-encoding gives back.)
        same = ulaw is not None and np.array_equal(ulaw_decode_float(ulaw), pcm)
        seen.setdefault(self.call_id, []).append((ulaw is not None, same))
        feed(self, pcm, ulaw)

    monkeypatch.setattr(dg_stt.DeepgramStream, "feed", spy)
    proxy = rig.proxy("deepgram")
    plain, cancelled = await asyncio.gather(run_call(rig, proxy, "deepgram", proxy),
                                            run_call(rig, proxy, "deepgram", proxy, echo=LineEcho(-12.0, 0.25),
                                                     echo_canceller="1"))
    assert len(seen[plain]) > 50 and len(seen[cancelled]) > 50
    # Every frame once the call is set up (the ones buffered while it was are fed decoded, first).
    given = [g for g, _ in seen[plain]]
    assert given == sorted(given) and sum(given) > 50 and all(m for g, m in seen[plain] if g)
    # The canceller: never bytes that differ from the audio the STT hears; with them before the greeting (nothing
    # to cancel yet), without them once it cancels the greeting's echo (after the frames buffered during set-up).
    assert all(m for g, m in seen[cancelled] if g)
    given = [g for g, _ in seen[cancelled]]
    first = given.index(True)
    assert False in given[first:], "frames the canceller works on must come without Twilio's bytes"