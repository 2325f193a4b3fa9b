"""``.env`` values reach the provider config models and the openai SDK (they read the process environment)."""

from __future__ import annotations

import os

from telebridge.config import STT
from telebridge.settings import load_env_file


def test_env_file_exports_non_empty_values_without_overriding(tmp_path, monkeypatch) -> None:
    env = tmp_path / ".env"
    env.write_text("DEEPGRAM_API_KEY=dg-from-file\nOPENAI_BASE_URL=\nAZURE_REGION=westeurope\n")
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("AZURE_REGION", "eastus")
    load_env_file(env)
    try:
        assert STT.Deepgram().api_key.get_secret_value() == "dg-from-file"
        assert "OPENAI_BASE_URL" not in os.environ  # empty in the file = unset, never ""
        assert os.environ["AZURE_REGION"] == "eastus"  # the real environment wins
    finally:
        os.environ.pop("DEEPGRAM_API_KEY", None)


def test_missing_env_file_is_fine(tmp_path) -> None:
    load_env_file(tmp_path / "nope.env")
