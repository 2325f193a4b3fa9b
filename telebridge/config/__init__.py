"""Session configuration models: ``VAD``, ``STT`` and ``TTS`` namespaces, and which providers this build runs.

Jay's agent files name cloud providers; telebridge implements providers one client at a time. A config that
names a provider with no client yet must fail when the call is configured, with a message saying what to use
instead -- not with an ``AttributeError`` deep inside the audio pipeline once the caller is already on the line.
A provider counts as implemented once its client module (see :mod:`telebridge.providers.registry`) imports; the
``IMPLEMENTED_STT`` / ``IMPLEMENTED_TTS`` sets remember the ones found.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from telebridge.config.stt import STT, AzureSTT, DeepgramSTT, OpenAISTT, WhisperSTT
from telebridge.config.tts import (
    DEFAULT_VOICE,
    TTS,
    AzureTTS,
    CartesiaTTS,
    DeepgramTTS,
    ElevenLabsTTS,
    FishAudioTTS,
    GoogleTTS,
    OpenAITTS,
    PiperTTS,
    ProsodyConfig,
    Voice,
    VoiceSettings,
)
from telebridge.config.vad import VAD, SileroVAD

if TYPE_CHECKING:
    from telebridge.session import SessionConfig

IMPLEMENTED_STT: set[str] = {"whisper"}
IMPLEMENTED_TTS: set[str] = {"piper"}

_LOCAL_HINT = {
    "stt": "STT.Whisper() (local, the default when stt is omitted)",
    "tts": "TTS.Piper() (local, the default when tts is omitted)",
}


class ProviderNotAvailable(ValueError):
    """The session config names a provider this telebridge build has no client for."""


def _display_name(model: object) -> str:
    config = getattr(model, "model_config", {})
    return str(config.get("title") or type(model).__name__)


def _implemented_names(namespace: type, implemented: set[str]) -> str:
    """E.g. "STT.Whisper", from the namespace's models whose ``provider`` default is implemented."""
    names = [
        _display_name(cls)
        for cls in vars(namespace).values()
        if isinstance(cls, type) and issubclass(cls, BaseModel) and "provider" in cls.model_fields
        and cls.model_fields["provider"].default in implemented
    ]
    return ", ".join(sorted(names))


def check_implemented(cfg: SessionConfig) -> None:
    """Raise :class:`ProviderNotAvailable` if ``cfg`` names an STT or TTS provider without a client yet."""
    from telebridge.providers.registry import available

    checks = [("stt", STT, m, IMPLEMENTED_STT) for m in (cfg.stt, *cfg.fallback_stt)]
    checks += [("tts", TTS, m, IMPLEMENTED_TTS) for m in (cfg.tts, *cfg.fallback_tts)]
    for kind, namespace, model, implemented in checks:
        if model.provider in implemented:
            continue
        if available(kind, model.provider):
            implemented.add(model.provider)
        else:
            raise ProviderNotAvailable(
                f"{_display_name(model)} is not available in this telebridge build yet; "
                f"use {_LOCAL_HINT[kind]} or another implemented {kind.upper()} provider "
                f"({_implemented_names(namespace, implemented)}); cloud clients need pip install 'telebridge[cloud]'."
            )


__all__ = [
    "VAD",
    "STT",
    "TTS",
    "SileroVAD",
    "DeepgramSTT",
    "AzureSTT",
    "OpenAISTT",
    "WhisperSTT",
    "ElevenLabsTTS",
    "OpenAITTS",
    "GoogleTTS",
    "AzureTTS",
    "DeepgramTTS",
    "CartesiaTTS",
    "FishAudioTTS",
    "PiperTTS",
    "Voice",
    "VoiceSettings",
    "ProsodyConfig",
    "DEFAULT_VOICE",
    "IMPLEMENTED_STT",
    "IMPLEMENTED_TTS",
    "ProviderNotAvailable",
    "check_implemented",
]
