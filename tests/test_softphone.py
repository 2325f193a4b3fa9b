"""The browser softphone (``/console/phone``) in headless Debian Chromium, against a real telebridge server.

The fake microphone plays a WAV made with Piper: quiet while the agent greets, "Please tell me a story.", quiet
while the story starts, then a question over it, then quiet. The page clones a voice from an uploaded sample and
calls with it, recording consent given: both sides' transcripts appear, the agent's audio plays (the playback
worklet's counters), and the interruption stops it (the queued audio is dropped the moment
``unmute.interrupted_by_vad`` arrives; nothing more of that reply is played). Server-side facts come from the
session's recording. A second test checks the page's access rules and its session token with API keys on.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from browser import launch_chromium, save_screenshot
from conftest import LiveServer
from speechutil import synth

from telebridge.audio.wav import wav_bytes
from telebridge.recording import ENDED, read_recording

AGENT = str(Path(__file__).parent / "agents" / "voice_agent.py")
GREETING = "Hello there."
STORY_START = "Once upon a time there was a little lighthouse"
ASK_STORY = "Please tell me a story."
INTERRUPTION = "Sorry to interrupt you, but could you please tell me your opening hours?"
SAMPLE_TEXT = ("Good morning. My tooth has been hurting since the weekend, so I would like to see a dentist soon. "
               "Could you tell me when you are open?")
CHARACTER = "You are Sam, a calm storyteller."
SCENARIO = "The caller wants to hear a story."
MIC_RATE = 48000
# The caller talks over the story this long after asking for it: the story starts ~1 s after the question (more on a
# loaded machine: 3 s and more was seen under the full suite on a slow day) and STORY_START takes ~3 s to say, so it
# is heard whole before the interruption; the story (~15 s) is still playing then.
STORY_HEARD_S = 8.0
LEAD_MS = 5000  # the server's lead: the page still holds queued audio when the interruption is confirmed
CLONED = re.compile(r"^cloned_voice_[A-Za-z0-9]{12}$")


def mic_wav(path: Path) -> Path:
    """One conversation's worth of caller audio; Chromium loops the file, so it ends in a long quiet."""
    quiet = lambda s: np.zeros(int(s * MIC_RATE), np.float32)  # noqa: E731
    audio = np.concatenate([quiet(4.0), synth(ASK_STORY, MIC_RATE), quiet(STORY_HEARD_S),
                            synth(INTERRUPTION, MIC_RATE), quiet(40.0)])
    path.write_bytes(wav_bytes(audio, MIC_RATE))
    return path


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("softphone")
    server = LiveServer(agent=AGENT, recordings_dir=tmp / "recordings", realtime_lead_ms=LEAD_MS)
    server.recordings = tmp / "recordings"
    server.start()
    yield server
    server.stop()


async def wait_js(page, expression: str, timeout: float = 25.0):
    """Poll until ``expression`` (JS) is truthy; fail with the page's state. (Playwright's wait_for_function
    evaluates strings in the page, which the page's Content-Security-Policy forbids; evaluate() is not.)"""
    deadline = time.monotonic() + timeout
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            state = await page.evaluate("JSON.stringify(window.phoneDebug)")
            status = await page.text_content("#status")
            error = await page.text_content("#error")
            raise AssertionError(f"timed out waiting for {expression}\nstatus: {status}\nerror: {error}\n"
                                 f"transcript: {await lines(page)}\ndebug: {state}")
        await asyncio.sleep(0.1)


async def lines(page) -> list[tuple[str, str]]:
    return [tuple(x) for x in await page.eval_on_selector_all(
        "#transcript li", "els => els.map(e => [e.className, e.textContent])")]


async def recording(directory: Path, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        files = sorted(directory.glob("*.jsonl")) if directory.exists() else []
        records = read_recording(files[0]) if files else []
        if (records and records[-1]["data"]["type"] == ENDED) or time.monotonic() > deadline:
            assert len(files) == 1, files
            return records
        await asyncio.sleep(0.1)


async def test_softphone_conversation_with_a_cloned_voice_and_an_interruption(srv, tmp_path):
    sample = tmp_path / "my-voice.wav"
    sample.write_bytes(wav_bytes(synth(SAMPLE_TEXT, 22050), 22050))
    async with launch_chromium(fake_mic=mic_wav(tmp_path / "mic.wav")) as browser:
        page = await browser.new_page()
        page_errors: list[str] = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        response = await page.goto(srv.url + "/console/phone")
        assert response.status == 200 and "microphone=(self)" in response.headers["permissions-policy"]
        await page.wait_for_selector("#voice option[value='default']", state="attached")

        # Clone a voice from an uploaded sample: it joins the picker, selected.
        await page.set_input_files("#clone-file", str(sample))
        await page.click("#clone")
        await wait_js(page, "document.querySelector('#status').textContent.startsWith('Voice cloned')")
        voice = await page.input_value("#voice")
        assert CLONED.match(voice) and srv.runtime.voices.is_listed(voice), voice

        await page.fill("#character", CHARACTER)
        await page.fill("#scenario", SCENARIO)
        await page.check("#consent")
        await page.click("#call")
        await wait_js(page, "phoneDebug.state === 'live'")

        # The greeting plays in the cloned voice; then the caller's question and the agent's story.
        await wait_js(page, f"phoneDebug.voice === '{voice}' && phoneDebug.playedSeconds > 0.5")
        await wait_js(page, "[...document.querySelectorAll('#transcript li.agent')]"
                            f".some(e => e.textContent.startsWith('{STORY_START}'))")
        await save_screenshot(page, "softphone-story")

        # Talked over: the queued story is dropped at once and nothing more of it plays.
        await wait_js(page, "phoneDebug.interruptions === 1 && phoneDebug.playedAtInterrupt !== null")
        await wait_js(page, "document.querySelector('#transcript li.agent.interrupted')?.textContent.endsWith('…')")
        await asyncio.sleep(0.5)
        debug = await page.evaluate("phoneDebug")
        await save_screenshot(page, "softphone-interrupted")
        heard = await lines(page)
        await page.click("#call")  # hang up
        await wait_js(page, "phoneDebug.state === 'idle'")

    assert not page_errors, page_errors
    assert debug["contextRate"] and debug["chunksSent"] > 100 and not debug["errors"], debug
    assert debug["playedSeconds"] > 2.0, debug  # the greeting and the story's start were heard
    # The story was playing when the question cut in: the page still held seconds of it (the server's lead),
    # dropped at once; nothing was played after that (until the next reply's audio, if it has come).
    assert debug["droppedSeconds"] > 0.2, debug
    if debug["playedSinceFlushSeconds"] is None:
        assert debug["playedSeconds"] == debug["playedAtInterrupt"] and debug["queuedSeconds"] == 0, debug
    else:
        assert debug["playedSinceFlushSeconds"] == 0, debug
    kinds = [kind for kind, _ in heard]
    texts = [text for _, text in heard]
    assert kinds[:3] == ["agent", "user", "agent interrupted"] and texts[0] == GREETING, heard
    assert "story" in texts[1].lower() and texts[2].startswith(STORY_START) and texts[2].endswith("…"), heard

    # The server's side, from the recording the caller consented to: the page's configuration, the voice the
    # replies spoke with, the character and scenario as the agent's system message, the interruption.
    records = await recording(srv.recordings)
    client = [r["data"] for r in records if r["event_sender"] == "client"]
    server = [r["data"] for r in records if r["event_sender"] == "server"]
    update = next(e for e in client if e["type"] == "session.update")["session"]
    assert update == {"voice": voice, "instructions": {"character": CHARACTER, "scenario": SCENARIO},
                      "allow_recording": True, "input_audio_format": "pcm16", "output_audio_format": "pcm16"}
    appended = [e for e in client if e["type"] == "unmute.input_audio_buffer.append_anonymized"]
    assert appended and {e["number_of_samples"] for e in appended[:-1]} == {960}  # 40 ms chunks at 24 kHz
    created = [e for e in server if e["type"] == "response.created"]
    assert {e["response"]["voice"] for e in created} == {voice}
    system = [m for m in created[0]["response"]["chat_history"] if m.get("name") == "unmute_instructions"]
    assert system and system[0]["content"] == f"{CHARACTER}\n\n{SCENARIO}"
    assert sum(e["type"] == "unmute.interrupted_by_vad" for e in server) == 1


async def test_with_keys_the_page_works_from_the_console_login_alone(srv):
    key = "softphone-test-key-0123456789abcdef"
    keyed = LiveServer(agent=AGENT, api_keys=key).start()
    try:
        async with httpx.AsyncClient(base_url=keyed.url) as http:
            page = await http.get("/console/phone")  # the page holds no data: served to anyone
            assert page.status_code == 200 and "/console/static/phone/phone.js" in page.text
            assert "connect-src 'self' ws://" in page.headers["content-security-policy"]
            asset = await http.get("/console/static/phone/playback-worklet.js")
            assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
            for method, path in [("POST", "/console/phone/session"), ("GET", "/console/phone/voices"),
                                 ("POST", "/console/phone/voices")]:
                assert (await http.request(method, path)).status_code == 401, path
            assert (await http.post("/console/login", json={"token": "not-the-key"})).status_code == 401

            # Logged in (the console's HttpOnly cookie), the page gets a realtime token, the voices, cloning.
            assert (await http.post("/console/login", json={"token": key})).status_code == 200
            minted = await http.post("/console/phone/session")
            assert minted.status_code == 200 and minted.headers["cache-control"] == "no-store"
            token = minted.json()["token"]
            assert token.startswith("tbst_") and minted.json()["expires_at"] > time.time()
            voices = await http.get("/console/phone/voices")
            assert voices.status_code == 200 and "default" in [v["name"] for v in voices.json()]
            no_file = await http.post("/console/phone/voices", files={"other": ("x.txt", b"x")})
            assert no_file.status_code == 422 and "'file'" in no_file.json()["detail"]  # reached the cloner
            # A page elsewhere cannot have a token minted with the operator's login.
            assert (await http.post("/console/phone/session",
                                    headers={"Origin": "https://evil.example"})).status_code == 403

        url = keyed.url.replace("http", "ws") + "/v1/realtime"
        protocols = ["realtime", f"telebridge-token.{token}"]
        async with websockets.connect(url, subprotocols=protocols) as ws:
            assert ws.subprotocol == "realtime"
            await ws.send(json.dumps({"type": "session.update", "session": {"voice": "nobody"}}))
            error = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert error["type"] == "error" and error["error"]["code"] == "unknown_voice"
        with pytest.raises(websockets.InvalidStatus) as refused:  # single use
            async with websockets.connect(url, subprotocols=protocols):
                pass
        assert refused.value.response.status_code == 401
    finally:
        keyed.stop()

    # Without any key the WebSocket answers loopback clients as they are: no token to mint.
    async with httpx.AsyncClient() as http:
        answer = await http.post(srv.url + "/console/phone/session")
    assert answer.status_code == 200 and answer.json() == {"token": None, "expires_at": None}
