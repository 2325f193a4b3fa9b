"""Text-to-speech settings (Jay's ``TTS`` namespace) plus telebridge's local Piper.

Same conventions as :mod:`telebridge.config.stt`: a defaulted ``provider`` discriminator, ``SecretStr`` keys
defaulting from Jay's environment variables, model and voice names as plain ``str``. Ranges that the provider
enforces anyway (pitch, speaking rate, chunk schedule) are checked here so a bad value fails when the agent
file is configured instead of on the first sentence of a live call.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, Secret, SecretStr, field_validator, model_serializer

from telebridge.config.stt import ProviderModel, api_key_field, base_url_field, env_str

# --- ElevenLabs ---------------------------------------------------------------------------------------------


class VoiceSettings(BaseModel):
    """ElevenLabs voice settings (``TTS.VoiceSettings``)."""

    model_config = ConfigDict(extra="forbid", title="TTS.VoiceSettings")

    stability: float = Field(ge=0.0, le=1.0)
    similarity_boost: float = Field(ge=0.0, le=1.0)
    style: float = Field(0.0, ge=0.0, le=1.0)
    use_speaker_boost: bool = True


class Voice(BaseModel):
    """An ElevenLabs voice (``TTS.Voice``)."""

    model_config = ConfigDict(extra="forbid", title="TTS.Voice")

    id: str
    name: str
    category: str
    settings: VoiceSettings | None = None


DEFAULT_VOICE = Voice(
    id="EXAVITQu4vr4xnSDxMaL",
    name="Bella",
    category="premade",
    settings=VoiceSettings(stability=0.71, similarity_boost=0.5, style=0.0, use_speaker_boost=True),
)

# Annotations use these aliases: inside the models, ``Voice``/``ProsodyConfig`` name the class attributes that
# let agent files write ``TTS.ElevenLabs.Voice(...)``.
_Voice = Voice

ElevenLabsEncoding = Literal[
    "mp3_22050_32",
    "mp3_44100_32",
    "mp3_44100_64",
    "mp3_44100_96",
    "mp3_44100_128",
    "mp3_44100_192",
    "pcm_16000",
    "pcm_22050",
    "pcm_44100",
    "ulaw_8000",  # not in Jay's list; it is exactly what a phone line carries, so no resampling is needed
]


class ElevenLabsTTS(ProviderModel):
    """ElevenLabs streaming TTS; exposed as ``TTS.ElevenLabs``."""

    model_config = ConfigDict(title="TTS.ElevenLabs")

    Voice: ClassVar[type[Voice]] = Voice
    VoiceSettings: ClassVar[type[VoiceSettings]] = VoiceSettings
    DEFAULT_VOICE: ClassVar[_Voice] = DEFAULT_VOICE

    provider: Literal["elevenlabs"] = "elevenlabs"
    base_url: str | None = base_url_field()
    api_key: SecretStr | None = api_key_field("ELEVENLABS_API_KEY")
    voice: _Voice = Field(default_factory=lambda: DEFAULT_VOICE.model_copy(deep=True))
    model: str = "eleven_turbo_v2_5"
    encoding: ElevenLabsEncoding = "mp3_22050_32"
    enable_ssml_parsing: bool = False
    chunk_length_schedule: list[int] = Field(default_factory=lambda: [80, 120, 200, 260])

    @field_validator("chunk_length_schedule")
    @classmethod
    def _schedule_in_range(cls, value: list[int]) -> list[int]:
        bad = [n for n in value if not 50 <= n <= 500]
        if bad:
            raise ValueError(f"chunk_length_schedule values must be between 50 and 500; got {bad}")
        return value


# --- OpenAI, Google, Deepgram -------------------------------------------------------------------------------


class OpenAITTS(ProviderModel):
    """OpenAI speech; exposed as ``TTS.OpenAI``."""

    model_config = ConfigDict(title="TTS.OpenAI")

    provider: Literal["openai"] = "openai"
    base_url: str | None = base_url_field()
    api_key: SecretStr | None = api_key_field("OPENAI_API_KEY")
    model: str = "tts-1"
    voice: str = "alloy"
    speed: float = Field(1.0, ge=0.25, le=4.0)


def _google_credentials_from_env() -> str | None:
    return os.environ.get("GOOGLE_CREDENTIALS") or None


class GoogleTTS(ProviderModel):
    """Google Cloud TTS; exposed as ``TTS.Google``.

    ``credentials`` is a service-account dict, held as ``pydantic.Secret`` (read it with
    ``.get_secret_value()``) so the private key never shows in ``repr`` or JSON. A JSON string is accepted too,
    which is how ``$GOOGLE_CREDENTIALS`` supplies it when not passed.
    """

    model_config = ConfigDict(title="TTS.Google")

    provider: Literal["google"] = "google"
    base_url: str | None = base_url_field()
    credentials: Secret[dict[str, Any]] | None = Field(
        default_factory=_google_credentials_from_env, validate_default=True
    )
    language: str = "en-US"
    gender: Literal["male", "female", "neutral", ""] = "neutral"
    voice_name: str = ""
    encoding: Literal["linear16", "wav", "mp3"] = "linear16"
    sample_rate: int = Field(24000, gt=0)
    pitch: float = Field(0.0, ge=-20.0, le=20.0)
    effects_profile_id: str = ""
    speaking_rate: float = Field(1.0, ge=0.25, le=4.0)

    @field_validator("credentials", mode="before")
    @classmethod
    def _parse_json_credentials(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"Google credentials must be a dict or a JSON object string (line {exc.lineno}: {exc.msg})"
                ) from None
        return value


class DeepgramTTS(ProviderModel):
    """Deepgram Aura TTS; exposed as ``TTS.Deepgram``."""

    model_config = ConfigDict(title="TTS.Deepgram")

    provider: Literal["deepgram"] = "deepgram"
    base_url: str | None = base_url_field()
    api_key: SecretStr | None = api_key_field("DEEPGRAM_API_KEY")
    model: str = "aura-asteria-en"
    encoding: str = "linear16"
    sample_rate: int = Field(24000, gt=0)


# --- Azure --------------------------------------------------------------------------------------------------


class ProsodyConfig(BaseModel):
    """SSML prosody for Azure (``TTS.ProsodyConfig``): numbers or Azure's named levels."""

    model_config = ConfigDict(extra="forbid", title="TTS.ProsodyConfig")

    rate: Literal["x-slow", "slow", "medium", "fast", "x-fast"] | float | None = None
    volume: Literal["silent", "x-soft", "soft", "medium", "loud", "x-loud"] | float | None = None
    pitch: Literal["x-low", "low", "medium", "high", "x-high"] | None = None

    @field_validator("rate")
    @classmethod
    def _rate_range(cls, value: str | float | None) -> str | float | None:
        if isinstance(value, float) and not 0.5 <= value <= 2.0:
            raise ValueError(f"prosody rate must be between 0.5 and 2.0 (or a named rate); got {value}")
        return value

    @field_validator("volume")
    @classmethod
    def _volume_range(cls, value: str | float | None) -> str | float | None:
        if isinstance(value, float) and not 0.0 <= value <= 100.0:
            raise ValueError(f"prosody volume must be between 0 and 100 (or a named level); got {value}")
        return value


_ProsodyConfig = ProsodyConfig


class AzureTTS(ProviderModel):
    """Azure Speech TTS; exposed as ``TTS.Azure``."""

    model_config = ConfigDict(title="TTS.Azure")

    ProsodyConfig: ClassVar[type[ProsodyConfig]] = ProsodyConfig

    provider: Literal["azure"] = "azure"
    base_url: str | None = base_url_field()
    api_key: SecretStr | None = api_key_field("AZURE_API_KEY")
    region: str | None = Field(default_factory=env_str("AZURE_REGION"), description="Defaults to $AZURE_REGION.")
    sample_rate: Literal[8000, 16000, 22050, 24000, 44100, 48000] = 24000
    voice: str | None = None
    language: str | None = None
    prosody: _ProsodyConfig | None = None
    endpoint_id: str | None = None


# --- Cartesia, FishAudio ------------------------------------------------------------------------------------

CartesiaSpeed = Literal["fastest", "fast", "normal", "slow", "slowest"]


class CartesiaTTS(ProviderModel):
    """Cartesia TTS; exposed as ``TTS.Cartesia``. ``voice`` is a voice id or a 192-number embedding."""

    model_config = ConfigDict(title="TTS.Cartesia")

    provider: Literal["cartesia"] = "cartesia"
    base_url: str | None = base_url_field()
    api_key: SecretStr | None = api_key_field("CARTESIA_API_KEY")
    model: str = "sonic-english"
    language: str = "en"
    encoding: Literal["pcm_s16le"] = "pcm_s16le"
    voice: str | list[float] = "c2ac25f9-ecc4-4f56-9095-651354df60c0"
    speed: CartesiaSpeed | float | None = None
    emotion: list[str] | None = None
    sample_rate: int = Field(24000, gt=0)

    @field_validator("voice")
    @classmethod
    def _embedding_size(cls, value: str | list[float]) -> str | list[float]:
        if isinstance(value, list) and len(value) != 192:
            raise ValueError(f"a Cartesia voice embedding has 192 numbers; got {len(value)}")
        return value

    @field_validator("speed")
    @classmethod
    def _speed_range(cls, value: str | float | None) -> str | float | None:
        if isinstance(value, float) and not -1.0 <= value <= 1.0:
            raise ValueError(f"Cartesia speed must be between -1.0 and 1.0 (or a named speed); got {value}")
        return value


class FishAudioTTS(ProviderModel):
    """Fish Audio TTS; exposed as ``TTS.FishAudio``."""

    model_config = ConfigDict(title="TTS.FishAudio")

    provider: Literal["fishaudio"] = "fishaudio"
    base_url: str | None = base_url_field()
    api_key: SecretStr | None = api_key_field("FISHAUDIO_API_KEY")
    model_id: str = "802e3bc2b27e49c2995d23ef70e6ac89"
    latency: Literal["balanced", "normal"] = "balanced"
    normalize: bool = True


# --- Piper (local) ------------------------------------------------------------------------------------------


class PiperTTS(ProviderModel):
    """Local Piper voice; telebridge's offline default, exposed as ``TTS.Piper``."""

    model_config = ConfigDict(title="TTS.Piper")

    provider: Literal["piper"] = "piper"
    model: str | None = Field(None, description="Path to a Piper .onnx voice; None uses the bundled 'joe' voice.")
    speaker: int | None = Field(None, ge=0, description="Speaker index for multi-speaker voices.")
    length_scale: float = Field(1.0, ge=0.5, le=2.0, description="Above 1 speaks slower, below 1 faster.")
    noise_scale: float | None = Field(None, ge=0.0, description="None keeps the voice's own setting.")
    pitch: float = Field(
        1.0,
        ge=0.7,
        le=1.4,
        description="Pitch factor (telebridge extension): audio is replayed faster by this factor and the speech "
        "slowed to match, so the speaking rate stays set by length_scale. Cloned voices use it.",
    )
    voice: str | None = Field(
        None,
        description="A voice from the voice store (the voices file or a cloned voice, e.g. 'cloned_voice_ab12'); "
        "when set, that voice's settings replace the ones above.",
    )

    @model_serializer(mode="wrap")
    def _omit_unset_extensions(self, handler: Any) -> Any:
        """Dump ``pitch``/``voice`` only when used, so configs written before they existed dump unchanged."""
        data = handler(self)
        if isinstance(data, dict):
            if data.get("voice") is None:
                data.pop("voice", None)
            if data.get("pitch") == 1.0:
                data.pop("pitch", None)
        return data


class TTS:
    """Namespace mirroring ``jay_ai.TTS``."""

    ElevenLabs = ElevenLabsTTS
    OpenAI = OpenAITTS
    Google = GoogleTTS
    Azure = AzureTTS
    Deepgram = DeepgramTTS
    Cartesia = CartesiaTTS
    FishAudio = FishAudioTTS
    Piper = PiperTTS
    Voice = Voice
    VoiceSettings = VoiceSettings
    ProsodyConfig = ProsodyConfig


__all__ = [
    "TTS",
    "Voice",
    "VoiceSettings",
    "ProsodyConfig",
    "DEFAULT_VOICE",
    "ElevenLabsTTS",
    "OpenAITTS",
    "GoogleTTS",
    "AzureTTS",
    "DeepgramTTS",
    "CartesiaTTS",
    "FishAudioTTS",
    "PiperTTS",
]
