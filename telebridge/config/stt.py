"""Speech-to-text settings (Jay's ``STT`` namespace) plus telebridge's local Whisper.

Every model carries a ``provider`` literal with a default, so ``SessionConfig`` can hold a discriminated union
while agent files never pass it. Model names are plain ``str``: Jay's closed literal lists rejected every model a
provider released after the package did (a known Jay weak spot), and the provider's own API is the authority.

Secrets: API keys are ``pydantic.SecretStr`` so they never show in ``repr``/``str``/logs or in validation errors
(``hide_input_in_errors``); provider clients call ``.get_secret_value()``. When a key is not passed it is read
from the environment variable Jay's tooling uses, at construction time, and is ``None`` if that is unset too --
the provider client reports a missing key when it starts, so a config can be built and inspected offline.

The small helpers at the top are shared with :mod:`telebridge.config.tts`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_serializer


class ProviderModel(BaseModel):
    """Base for provider settings: typos are errors, assignments are validated, inputs never echo in errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    @model_serializer(mode="wrap")
    def _omit_unset_base_url(self, handler: Any) -> Any:
        """``base_url`` (a telebridge extension) is dumped only when set: Jay's configs dump unchanged."""
        data = handler(self)
        if isinstance(data, dict) and "base_url" in data and data["base_url"] is None:
            data.pop("base_url")
        return data

    def __repr_name__(self) -> str:
        """Show the name agent files use (``STT.Deepgram``), not the internal class name."""
        return str(self.model_config.get("title") or type(self).__name__)


def env_secret(name: str) -> Callable[[], SecretStr | None]:
    """A ``default_factory`` reading an API key from ``name`` when the agent file did not pass one."""

    def factory() -> SecretStr | None:
        value = os.environ.get(name)
        return SecretStr(value) if value else None

    factory.__name__ = f"env_{name}"
    return factory


def env_str(name: str) -> Callable[[], str | None]:
    """A ``default_factory`` for non-secret settings that also come from the environment (e.g. a region)."""

    def factory() -> str | None:
        return os.environ.get(name) or None

    factory.__name__ = f"env_{name}"
    return factory


def api_key_field(env_name: str) -> Any:
    """The field spec every provider's ``api_key`` uses."""
    return Field(default_factory=env_secret(env_name), description=f"API key; defaults to ${env_name}.")


def base_url_field() -> Any:
    """Every cloud config's ``base_url`` (telebridge extension): an ``http(s)://host[:port]`` origin replacing the
    provider's public one (and the service-wide ``TELEBRIDGE_<PROVIDER>_BASE_URL``); paths stay the provider's."""
    return Field(None, pattern=r"^https?://[^/?#\s]+/?$", description="Origin replacing the provider's public one.")


class DeepgramSTT(ProviderModel):
    """Deepgram streaming STT; exposed as ``STT.Deepgram``."""

    model_config = ConfigDict(title="STT.Deepgram")

    provider: Literal["deepgram"] = "deepgram"
    base_url: str | None = base_url_field()
    api_key: SecretStr | None = api_key_field("DEEPGRAM_API_KEY")
    model: str = "nova-2-general"
    language: str = "en-US"
    interim_results: bool = True
    punctuate: bool = True
    smart_format: bool = True
    sample_rate: int = Field(16000, gt=0)
    no_delay: bool = True
    endpointing_ms: int = Field(25, ge=0)
    filler_words: bool = True
    keywords: list[tuple[str, float]] = Field(default_factory=list)
    profanity_filter: bool = False


class AzureSTT(ProviderModel):
    """Azure Speech STT; exposed as ``STT.Azure``."""

    model_config = ConfigDict(title="STT.Azure")

    provider: Literal["azure"] = "azure"
    base_url: str | None = base_url_field()
    api_key: SecretStr | None = api_key_field("AZURE_API_KEY")
    region: str | None = Field(default_factory=env_str("AZURE_REGION"), description="Defaults to $AZURE_REGION.")
    sample_rate: int = Field(16000, gt=0)
    num_channels: int = Field(1, ge=1)
    languages: list[str] = Field(default_factory=lambda: ["en-US"])


class OpenAISTT(ProviderModel):
    """OpenAI transcription; exposed as ``STT.OpenAI``."""

    model_config = ConfigDict(title="STT.OpenAI")

    provider: Literal["openai"] = "openai"
    base_url: str | None = base_url_field()
    api_key: SecretStr | None = api_key_field("OPENAI_API_KEY")
    language: str = "en"
    model: str = "whisper-1"


class WhisperSTT(ProviderModel):
    """Local faster-whisper (CTranslate2) transcription; telebridge's offline default, exposed as ``STT.Whisper``."""

    model_config = ConfigDict(title="STT.Whisper")

    provider: Literal["whisper"] = "whisper"
    model: str | None = Field(
        None, description="Path to a CTranslate2 Whisper model directory; None uses the bundled tiny.en."
    )
    language: str = "en"
    beam_size: int = Field(1, ge=1, description="1 is greedy decoding: fastest, and enough for phone turns.")
    short_window: bool = Field(
        True,
        description="Encode a turn in a window sized to it (at least 12 s) instead of Whisper's 30 s: about 4x "
        "faster on phone turns, nearly the same words; False always decodes the full window.",
    )


class STT:
    """Namespace mirroring ``jay_ai.STT``."""

    Deepgram = DeepgramSTT
    Azure = AzureSTT
    OpenAI = OpenAISTT
    Whisper = WhisperSTT


__all__ = ["STT", "DeepgramSTT", "AzureSTT", "OpenAISTT", "WhisperSTT", "ProviderModel", "env_secret", "env_str", "base_url_field"]
