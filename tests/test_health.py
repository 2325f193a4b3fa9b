"""GET /v1/health: per-part status, ``ok``, and cheap (never loads or runs a model)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import httpx

from telebridge.health import health_report
from telebridge.memory import Trimmer
from telebridge.recording import Recorder
from telebridge.voices.store import VoiceStore
from telebridge.providers.health import ProviderHealth


async def test_health_reports_every_part_and_is_ok_on_the_embedded_stack(server):
    engines_before = dict(server.runtime._engines)
    async with httpx.AsyncClient() as http:
        responses = [await http.get(server.url + "/v1/health") for _ in range(20)]  # polled, cheaply
        voices = await http.get(server.url + "/v1/voices")
    assert {r.status_code for r in responses} == {200}
    body = responses[-1].json()
    assert body["ok"] is True
    assert {k: body[k] for k in ("stt_up", "tts_up", "llm_up", "voice_cloning_up")} == dict.fromkeys(
        ("stt_up", "tts_up", "llm_up", "voice_cloning_up"), True)
    assert set(body["parts"]) >= {"vad", "stt", "tts", "llm", "voice_cloning"}
    assert all(isinstance(p["up"], bool) and p["detail"] for p in body["parts"].values())
    assert "recording_storage" not in body["parts"]  # recording is off unless a directory is configured
    assert server.runtime._engines == engines_before
    # The process's footprint, as /proc and the event loop see it (what bench/soak.py watches for leaks).
    process = body["process"]
    assert process["rss_bytes"] > 50_000_000 and process["threads"] >= 2 and process["open_fds"] >= 3
    assert process["asyncio_tasks"] >= 1 and process["malloc_trims"] >= 0
    # Without a voices file the store has the bundled Piper voice only.
    assert voices.json() == [{"name": "default", "language": "en", "gender": "male",
                              "source": {"source_type": "file", "path_on_server": "voices/default"}}]


def fake_runtime(tmp_path: Path, *, hub_running: bool = True, draining: bool = False, recordings: Path | None = None):
    loop = asyncio.new_event_loop()
    try:
        hub = loop.create_future()
        if not hub_running:
            hub.set_result(None)
    finally:
        loop.close()
    agent = SimpleNamespace(id="a")
    return SimpleNamespace(
        _hub_task=hub, vad_pool=SimpleNamespace(_closed=False), speech_pool=SimpleNamespace(_closed=False),
        _engines={}, agent=agent, voices=VoiceStore(None, tmp_path / "clones"), recorder=Recorder(recordings),
        draining=draining, accepting=not draining, calls={}, provider_health=ProviderHealth(), memory=Trimmer(),
    )


def test_ok_is_false_when_a_required_part_is_down_or_draining(tmp_path):
    assert health_report(fake_runtime(tmp_path))["ok"] is True
    down = health_report(fake_runtime(tmp_path, hub_running=False))
    assert down["ok"] is False and down["parts"]["vad"]["up"] is False
    assert health_report(fake_runtime(tmp_path, draining=True))["ok"] is False
    closed = fake_runtime(tmp_path)
    closed.speech_pool._closed = True
    report = health_report(closed)
    assert report["ok"] is False and report["stt_up"] is False and report["tts_up"] is False


def test_voice_cloning_and_recording_storage_are_reported_but_optional(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    rt = fake_runtime(tmp_path, recordings=blocked / "recordings")
    rt.voices = VoiceStore(None, blocked / "clones")
    report = health_report(rt)
    assert report["ok"] is True
    assert report["voice_cloning_up"] is False and report["parts"]["voice_cloning"]["up"] is False
    assert report["parts"]["recording_storage"]["up"] is False


def test_provider_outcomes_are_counted_without_making_the_service_unhealthy(tmp_path):
    runtime = fake_runtime(tmp_path)
    runtime.provider_health.ok("stt.deepgram")
    runtime.provider_health.error("tts.elevenlabs", "auth", "credentials refused")
    runtime.provider_health.fallback("tts.elevenlabs")
    report = health_report(runtime)
    assert report["ok"] is True  # calls fall back: a cloud provider down is not the service down
    assert report["providers"]["stt.deepgram"]["up"] is True
    bad = report["providers"]["tts.elevenlabs"]
    assert bad["up"] is False and bad["errors_by_kind"] == {"auth": 1} and bad["fallbacks"] == 1
