"""Start-up loads the embedded Whisper and Piper unless ``TELEBRIDGE_PRELOAD_LOCAL=false`` (cloud-speech agents:
a worker then starts faster and holds far less memory); the end-of-turn model is loaded either way."""

from __future__ import annotations

import pytest

from telebridge.runtime import Runtime
from telebridge.settings import Settings


@pytest.mark.parametrize("preload", [True, False])
async def test_start_up_loads_the_local_speech_models_only_when_asked(monkeypatch, tmp_path, preload):
    settings = Settings(_env_file=None, preload_local=preload, voice_store_dir=tmp_path)
    runtime = Runtime(settings)
    loaded: list[str] = []

    class Engine:
        def __init__(self, name: str) -> None:
            self.name = name

        async def warmup(self) -> None:
            loaded.append(f"{self.name} warmed")

    async def stt_for(config):
        loaded.append(config.provider)
        return Engine(config.provider)

    async def tts_for(config):
        loaded.append(config.provider)
        return Engine(config.provider)

    monkeypatch.setattr(runtime, "stt_for", stt_for)
    monkeypatch.setattr(runtime, "tts_for", tts_for)
    classifier = runtime.turn_classifier
    if classifier is not None:
        async def load() -> None:
            loaded.append("end-of-turn")

        monkeypatch.setattr(classifier, "load", load)
    await runtime.start()
    try:
        local = ["whisper", "piper", "whisper warmed", "piper warmed"] if preload else []
        assert loaded == local + (["end-of-turn"] if classifier is not None else [])
    finally:
        await runtime.stop()


def test_the_setting_reads_from_the_environment(monkeypatch):
    monkeypatch.setenv("TELEBRIDGE_PRELOAD_LOCAL", "false")
    assert Settings(_env_file=None).preload_local is False
    monkeypatch.delenv("TELEBRIDGE_PRELOAD_LOCAL")
    assert Settings(_env_file=None).preload_local is True
