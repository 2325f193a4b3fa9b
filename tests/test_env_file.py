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


def test_env_example_copied_to_env_is_a_valid_configuration() -> None:
    """`cp .env.example .env` is the documented start: every line of it must validate as it stands."""
    from pathlib import Path

    from telebridge.settings import Settings

    example = Path(__file__).resolve().parents[1] / ".env.example"
    settings = Settings(_env_file=example)
    assert settings.public_url is None and settings.validate_signatures is None
    assert settings.voice_store_dir.name == "voices" and settings.voice_store_dir.is_absolute()


def test_every_setting_is_listed_in_env_example() -> None:
    from pathlib import Path

    from telebridge.settings import Settings

    text = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    missing = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names = list(getattr(alias, "choices", [])) if alias is not None else []
        names = [n for n in names if isinstance(n, str)] + [f"TELEBRIDGE_{name.upper()}"]
        if not any(f"\n{n}=" in "\n" + text or f"# {n}=" in text for n in names):
            missing.append(names[-1])
    assert not missing, f".env.example does not list: {missing}"
