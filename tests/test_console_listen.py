"""Listening in from the console (issue 9): only while the call is recorded with consent; what comes out is the
caller and the agent mixed at playback pace; withdrawing consent or hanging up ends it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import websockets
from conftest import LiveServer

from telebridge.audio.g711 import ulaw_encode
from telebridge.console.listen import OUT_RATE, ListenTap, Mixer
from telebridge.simulator import Say, simulate_call

AGENT = str(Path(__file__).parent / "agents" / "voice_agent.py")
FRAME = 160  # 20 ms at 8 kHz


def tone(freq: float, n: int, level: float = 0.3) -> bytes:
    t = np.arange(n) / 8000
    return ulaw_encode((level * np.sin(2 * np.pi * freq * t)).astype(np.float32))


def pcm(frames: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(frames), "<i2").astype(np.float32) / 32768.0


def test_the_agent_is_heard_at_the_callers_pace_and_a_clear_drops_what_was_not_played():
    mixer = Mixer()
    silence = tone(0, FRAME, 0.0)
    mixer.agent(tone(440, FRAME * 10))  # 200 ms sent ahead of playback
    out = [mixer.caller(silence) for _ in range(5)]  # 100 ms of the call: half of the agent's audio plays
    assert all(len(f) == 2 * OUT_RATE // 50 for f in out)  # 20 ms of 24 kHz PCM16 per caller frame
    assert np.sqrt(np.mean(pcm(out[1:]) ** 2)) > 0.1
    mixer.clear()  # barge-in: the rest never reached the caller
    after = pcm([mixer.caller(silence) for _ in range(5)])
    assert np.sqrt(np.mean(after[OUT_RATE // 100 :] ** 2)) < 0.01  # (the resampler's short tail aside)
    both = pcm([mixer.caller(tone(300, FRAME)) for _ in range(3)])  # the caller alone is heard too
    assert np.sqrt(np.mean(both ** 2)) > 0.1


async def test_no_consent_no_audio_and_withdrawing_it_ends_every_listener():
    consent = {"ok": False}
    tap = ListenTap(lambda: consent["ok"])
    assert tap.listen() is None
    consent["ok"] = True
    a, b = tap.listen(), tap.listen()
    tap.agent(tone(440, FRAME))
    tap.caller(tone(300, FRAME))
    assert a.queue.qsize() == b.queue.qsize() == 1
    consent["ok"] = False
    tap.caller(tone(300, FRAME))  # the next frame finds consent gone
    for listener in (a, b):
        listener.queue.get_nowait()
        assert listener.queue.get_nowait() is None
    assert tap.closed and tap.listen() is None


async def test_a_slow_listener_loses_old_audio_never_holds_the_call():
    tap = ListenTap(lambda: True)
    listener = tap.listen()
    for _ in range(200):
        tap.caller(tone(300, FRAME))
    assert listener.queue.qsize() == listener.queue.maxsize and listener.dropped == 200 - listener.queue.maxsize


@pytest.fixture(scope="module")
def rec_server(tmp_path_factory):
    server = LiveServer(agent=AGENT, recordings_dir=tmp_path_factory.mktemp("recordings")).start()
    yield server
    server.stop()


async def _live_call_id(server, timeout: float = 15.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        live = list(server.runtime.console.hub.live)
        if live:
            return live[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no live call appeared")


def _ws_url(server, call_id: str) -> str:
    return server.url.replace("http://", "ws://") + f"/console/api/calls/{call_id}/listen"


async def test_listening_in_to_a_recorded_call_hears_both_sides_until_it_ends(rec_server, auth_token):
    call = asyncio.create_task(simulate_call(
        rec_server.url, script=[Say(at=None, text="What are your opening hours?", after_agent_quiet=0.6)],
        auth_token=auth_token, duration=20, end_when_quiet=1.2, transcribe=False,
        custom_parameters={"allow_recording": "true"}))
    call_id = await _live_call_id(rec_server)
    frames: list[bytes] = []
    closed = None
    async with websockets.connect(_ws_url(rec_server, call_id), max_size=None) as ws:
        try:
            async for message in ws:
                frames.append(message)
        except websockets.ConnectionClosed:
            pass
        closed = ws.close_code
    result = await call
    assert closed == 1000  # the call ended: the server closed the listener cleanly
    audio = pcm(frames)
    seconds = len(audio) / OUT_RATE
    # Real time: one 20 ms frame per caller frame while listening (the simulator hangs up ~1 s after the answer).
    assert 2.0 < seconds <= len(result.sent) / 8000 + 0.1, seconds
    loud = np.sqrt(np.mean(audio.reshape(-1, OUT_RATE // 50) ** 2, axis=1)) > 0.01
    assert loud.mean() > 0.3  # the greeting, the question and the answer, not silence
    detail = rec_server.runtime.console.hub.find(call_id).detail()
    assert any("listening in" in (e.get("text") or "") for e in detail["transcript"])


async def test_a_call_not_recorded_cannot_be_listened_to(rec_server, auth_token):
    call = asyncio.create_task(simulate_call(
        rec_server.url, script=[Say(at=None, text="What are your opening hours?", after_agent_quiet=0.6)],
        auth_token=auth_token, duration=20, end_when_quiet=1.2, transcribe=False))
    call_id = await _live_call_id(rec_server)
    async with websockets.connect(_ws_url(rec_server, call_id)) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4403 and "consent" in ws.close_reason
    async with websockets.connect(_ws_url(rec_server, "CAnotacall")) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4404
    await call


async def test_the_listen_button_plays_a_recorded_call_in_the_browser(rec_server, auth_token):
    from browser import launch_chromium, save_screenshot

    async with launch_chromium() as browser:
        page = await browser.new_page()
        await page.goto(rec_server.url + "/console")  # loopback, no token configured: straight in
        await page.wait_for_selector("[data-testid=feed-status][data-state=live]")
        call = asyncio.create_task(simulate_call(
            rec_server.url, script=[Say(at=None, text="Tell me a story please.", after_agent_quiet=0.6)],
            auth_token=auth_token, duration=25, end_when_quiet=1.2, transcribe=False,
            custom_parameters={"allow_recording": "true"}))
        card = page.get_by_test_id("live-call")
        await card.wait_for(timeout=20_000)
        await card.get_by_test_id("listen").click()
        await page.wait_for_selector("[data-testid=listen][data-status=listening]", timeout=10_000)
        for _ in range(100):  # frames arrive in real time: a second of them
            if await page.evaluate("window.consoleListen ? window.consoleListen.frames : 0") >= 50:
                break
            await asyncio.sleep(0.1)
        assert await page.evaluate("window.consoleListen.frames") >= 50
        await save_screenshot(page, "console-listening-in")
        await call
        for _ in range(150):  # the call ended: the server closed the stream and the page stopped playing
            if await page.evaluate("window.consoleListen.socket === null"):
                break
            await asyncio.sleep(0.1)
        assert await page.evaluate("window.consoleListen.socket === null && window.consoleListen.ctx === null")
