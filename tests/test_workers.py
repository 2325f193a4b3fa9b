"""``telebridge serve --workers 2``: the real command line as a subprocess on a free port, with a real
redis-server. Both workers answer on the one port and sum their metrics; a worker that dies is replaced; a call
goes through whichever workers its requests reach; SIGTERM lets it finish, then everything exits cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from conftest import AUTH_TOKEN, free_port, wait_healthy
from redis_server import RedisServer
from telebridge.simulator import Say, simulate_call



@pytest.fixture(scope="module")
def redis():
    server = RedisServer().start()
    yield server
    server.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _pids(url: str, want: int, tries: int = 400) -> set[int]:
    """Worker pids answering /healthz, each request on a new connection (the kernel picks the worker)."""
    seen: set[int] = set()
    for _ in range(tries):
        async with httpx.AsyncClient() as client:
            seen.add((await client.get(url + "/healthz")).json()["pid"])
        if len(seen) >= want:
            break
    return seen


async def test_two_workers_share_the_port_replace_a_dead_one_and_drain_on_sigterm(redis, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "HF_HUB_OFFLINE": "1", "REDIS_URL": redis.url,
           "TELEBRIDGE_REDIS_PREFIX": "workers", "TELEBRIDGE_VOICE_STORE_DIR": str(tmp_path / "voices"),
           "TELEBRIDGE_DRAIN_TIMEOUT": "30", "TELEBRIDGE_AGENT": str(Path(__file__).parent / "agents" /
                                                                      "voice_agent.py")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "telebridge", "serve", "--workers", "2", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        await wait_healthy(url, proc)
        pids = await _pids(url, 2)
        assert len(pids) == 2 and proc.pid not in pids, pids  # both workers answer on the one port
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(url + "/metrics")).text
        assert {int(p) for p in re.findall(r'process_resident_memory_bytes\{pid="(\d+)"\}', metrics)} == pids
        multiproc = [d for d in Path(tempfile.gettempdir()).glob("telebridge-metrics-*") if any(
            f.name.endswith(f"_{min(pids)}.db") for f in d.iterdir())]
        assert len(multiproc) == 1  # the supervisor's temporary PROMETHEUS_MULTIPROC_DIR

        dead = min(pids)
        os.kill(dead, signal.SIGKILL)  # a worker crashes: the supervisor starts another
        deadline = time.monotonic() + 60
        while True:
            now = await _pids(url, 2, tries=60)
            if len(now) == 2 and dead not in now:
                break
            assert time.monotonic() < deadline, now
            await asyncio.sleep(0.5)
        await wait_healthy(url, proc)

        # A call: its webhook, stream and stream-ended request go to whichever worker takes each connection.
        call_task = asyncio.create_task(simulate_call(
            url, script=[Say(at=None, text="What are your opening hours?", after_agent_quiet=0.5)],
            auth_token=AUTH_TOKEN, duration=25, end_when_quiet=1.5, transcribe=False))
        for _ in range(400):  # until a worker holds the call (a new connection each time: any worker answers)
            async with httpx.AsyncClient() as client:
                if (await client.get(url + "/healthz")).json()["calls"]:
                    break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("no worker reported the call")
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)  # a deploy: the supervisor tells each worker once
        call = await call_task
        assert call.ended_by == "quiet", call.ended_by  # the caller finished; the server never cut the call
        assert len(call.agent_segments) >= 2, call.agent_segments  # the greeting and the answer
        out = proc.communicate(timeout=60)[0].decode(errors="replace")
        assert proc.returncode == 0, out[-3000:]
        assert "letting 1 live call(s) finish" in out, out[-3000:]  # the worker holding it drained
        assert "all workers stopped" in out and "Traceback" not in out, out[-3000:]
        assert not any(_alive(pid) for pid in now), "a worker outlived the supervisor"
        assert not multiproc[0].exists()  # the temporary metrics directory is gone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_more_than_one_worker_needs_redis(monkeypatch, capsys):
    from telebridge.cli import main

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("TELEBRIDGE_REDIS_URL", raising=False)
    assert main(["serve", "--workers", "2", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("telebridge: 2 workers need REDIS_URL") and "\n" not in err
    monkeypatch.setenv("REDIS_URL", "localhost:6379")  # not a URL
    assert main(["serve", "--workers", "2", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("telebridge: invalid setting REDIS_URL") and "\n" not in err
