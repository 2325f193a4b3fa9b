"""What a provider client gets from the service: settings, the worker pool, the health counters, and where the
audio goes (a phone line wants 8 kHz μ-law straight from the provider).

Endpoints: every cloud config takes a ``base_url``; otherwise the service-wide setting
(``TELEBRIDGE_<PROVIDER>_BASE_URL``, or the openai SDK's own ``OPENAI_BASE_URL``) replaces the provider's public
origin; otherwise the public one. An origin is ``http(s)://host[:port]``; WebSocket endpoints use the same origin
with ``ws(s)://`` and every path stays exactly as the provider documents it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from telebridge.providers.health import ProviderHealth

if TYPE_CHECKING:
    from telebridge.inference import InferencePool
    from telebridge.settings import Settings

__all__ = ["ProviderContext", "ws_origin", "PHONE_RATE"]

PHONE_RATE = 8000

# Service-wide origin overrides: provider → Settings attribute.
_ORIGIN_SETTINGS = {
    "deepgram": "deepgram_base_url",
    "elevenlabs": "elevenlabs_base_url",
    "cartesia": "cartesia_base_url",
    "fishaudio": "fishaudio_base_url",
    "azure": "azure_speech_base_url",
    "google": "google_tts_base_url",
}


def ws_origin(origin: str) -> str:
    """``https://host`` → ``wss://host``; ``http://host`` → ``ws://host``."""
    if origin.startswith("https://"):
        return "wss://" + origin[len("https://"):]
    if origin.startswith("http://"):
        return "ws://" + origin[len("http://"):]
    return origin


@dataclass
class ProviderContext:
    settings: Settings
    pool: InferencePool
    health: ProviderHealth
    phone: bool = False
    """The audio is for (and from) an 8 kHz μ-law phone line: ask providers for that format where they offer it,
    unless the agent set an encoding explicitly."""

    def origin(self, provider: str, cfg: Any, default: str) -> str:
        """The ``http(s)://host[:port]`` origin to reach ``provider`` at, without a trailing slash."""
        explicit = getattr(cfg, "base_url", None)
        if explicit:
            return str(explicit).rstrip("/")
        if provider == "openai":
            env = os.environ.get("OPENAI_BASE_URL")
            return env.rstrip("/") if env else default
        attr = _ORIGIN_SETTINGS.get(provider)
        value = getattr(self.settings, attr, None) if attr else None
        return str(value).rstrip("/") if value else default

    def wants_phone_format(self, cfg: Any, field: str = "encoding") -> bool:
        """Phone audio and the agent did not insist on its own ``field`` value."""
        return self.phone and field not in getattr(cfg, "model_fields_set", set())
