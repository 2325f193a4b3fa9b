"""Which module builds the client for each ``provider`` name.

Each module exposes ``create(cfg, ctx: ProviderContext) -> engine``. STT engines implement
:class:`~telebridge.providers.stt.base.STTEngine` (whole utterances) and/or
:class:`~telebridge.providers.stt.base.StreamingSTTEngine` (one stream per call); TTS engines implement
:class:`~telebridge.providers.tts.base.TTSEngine` and may add ``open_session()`` for streaming. Both may offer
``async check()``: a cheap, cached credential check run when a call starts.
"""

from __future__ import annotations

import importlib
from typing import Any

from telebridge.providers.context import ProviderContext

__all__ = ["STT_MODULES", "TTS_MODULES", "create_stt", "create_tts", "available"]

STT_MODULES = {
    "whisper": "telebridge.providers.stt.whisper",
    "deepgram": "telebridge.providers.stt.deepgram",
    "openai": "telebridge.providers.stt.openai",
    "azure": "telebridge.providers.stt.azure",
}
TTS_MODULES = {
    "piper": "telebridge.providers.tts.piper",
    "elevenlabs": "telebridge.providers.tts.elevenlabs",
    "openai": "telebridge.providers.tts.openai",
    "google": "telebridge.providers.tts.google",
    "azure": "telebridge.providers.tts.azure",
    "deepgram": "telebridge.providers.tts.deepgram",
    "cartesia": "telebridge.providers.tts.cartesia",
    "fishaudio": "telebridge.providers.tts.fishaudio",
}


def _module(table: dict[str, str], provider: str) -> Any:
    name = table.get(provider)
    if name is None:
        raise ValueError(f"unknown provider {provider!r}")
    return importlib.import_module(name)


def available(kind: str, provider: str) -> bool:
    """Whether this build has a client for ``provider`` (its module and the libraries it needs import)."""
    table = STT_MODULES if kind == "stt" else TTS_MODULES
    try:
        return hasattr(_module(table, provider), "create")
    except ImportError:
        return False


def create_stt(cfg: Any, ctx: ProviderContext) -> Any:
    return _module(STT_MODULES, cfg.provider).create(cfg, ctx)


def create_tts(cfg: Any, ctx: ProviderContext) -> Any:
    return _module(TTS_MODULES, cfg.provider).create(cfg, ctx)
