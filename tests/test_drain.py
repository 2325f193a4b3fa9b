"""A deploy (SIGTERM) lets live calls finish instead of cutting callers off."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from conftest import AUTH_TOKEN, free_port, wait_healthy
from telebridge.simulator import Say, simulate_call
from telebridge.twilio.signature import compute_signature

# The short-spoken test agent: a one-line greeting and a one-sentence answer keep the drained call short.
AGENT = str(Path(__file__).parent / "agents" / "voice_agent.py")


def proc_output(proc: subprocess.Popen) -> str:
    proc.kill()
    return proc.communicate()[0].decode(errors="replace")[-3000:]


async def test_sigterm_drains_live_calls_and_refuses_new_ones():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "HF_HUB_OFFLINE": "1", "TELEBRIDGE_DRAIN_TIMEOUT": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "telebridge", "serve", "--port", str(port), "--agent", AGENT],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await wait_healthy(url, proc)
        call_task = asyncio.create_task(simulate_call(
            url, script=[Say(at=None, text="What are your opening hours?", after_agent_quiet=0.8)],
            auth_token=AUTH_TOKEN, duration=30, end_when_quiet=1.5, transcribe=False))
        async with httpx.AsyncClient() as client:  # wait until the call is live (the greeting is playing)
            for _ in range(200):
                if (await client.get(url + "/healthz")).json()["calls"] >= 1:
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        form = {"CallSid": "CA" + "1" * 32, "From": "+15551230001", "To": "+15559870002"}
        async with httpx.AsyncClient() as client:
            health = await client.get(url + "/healthz")
            refused = await client.post(url + "/twilio/voice", data=form, headers={
                "X-Twilio-Signature": compute_signature(url + "/twilio/voice", form, AUTH_TOKEN)})
        assert health.status_code == 503, proc_output(proc)
        assert "busy" in refused.text and "<Connect" not in refused.text
        call = await call_task
        assert call.ended_by != "server", "the live call was not cut off"
        assert len(call.agent_segments) >= 2, "the caller still got the answer"
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
