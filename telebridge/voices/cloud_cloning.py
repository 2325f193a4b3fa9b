"""Real voice cloning through a cloud provider: ElevenLabs instant voice cloning, or Cartesia's clone endpoint.

``TELEBRIDGE_VOICE_CLONING_PROVIDER=elevenlabs|cartesia`` sends each ``POST /v1/voices`` sample to the provider
and stores a cloned voice whose TTS is that provider with the new voice id:

* ElevenLabs: ``POST /v1/voices/add`` (multipart ``name`` + ``files``; ``xi-api-key`` header,
  ``$ELEVENLABS_API_KEY``) → ``{"voice_id"}`` → ``TTS.ElevenLabs(voice={id, name, category: cloned})``.
* Cartesia: ``POST /voices/clone`` (multipart ``clip``, ``name``, ``language``; ``Cartesia-Version`` header,
  ``$CARTESIA_API_KEY`` sent as ``X-API-Key`` and as a bearer token, as the API's versions ask) → ``{"id"}`` →
  ``TTS.Cartesia(voice=id)``.

The sample sent is what the upload decoded to (mono, at most 15 s), re-encoded as 16-bit WAV: one format every
provider accepts, whatever was uploaded. Silence and too little speech are refused here first (422), so no
request is made for a sample that cannot work. The store keeps the provider's voice id and a few measurements,
never the audio and never the key.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from telebridge.audio.wav import wav_bytes
from telebridge.config.tts import CartesiaTTS, ElevenLabsTTS, Voice
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import ProviderAuthError, ProviderError, http_error
from telebridge.providers.retry import with_retries

from .analysis import NotEnoughSpeech, median_f0, prepare
from .cloning import RunBlocking, gender_from_f0
from .decode import UnusableAudio
from .store import VoiceEntry, VoiceStore, new_cloned_name

log = logging.getLogger("telebridge.voices.cloud")

ORIGINS = {"elevenlabs": "https://api.elevenlabs.io", "cartesia": "https://api.cartesia.ai"}
ENV_VARS = {"elevenlabs": "ELEVENLABS_API_KEY", "cartesia": "CARTESIA_API_KEY"}
CARTESIA_VERSION = "2025-04-16"
MIN_VOICED_SECONDS = 1.0


class CloudCloner:
    """Clones a voice at ``provider`` and stores it in the :class:`VoiceStore`."""

    def __init__(self, store: VoiceStore, provider: str, ctx: ProviderContext, *, run_blocking: RunBlocking,
                 language: str = "en") -> None:
        if provider not in ORIGINS:
            raise ValueError(f"no cloud cloning for {provider!r}")
        self.store = store
        self.provider = provider
        self.ctx = ctx
        self.language = language
        self._run = run_blocking
        self.origin = ctx.origin(provider, None, ORIGINS[provider])

    def _key(self) -> str:
        key = os.environ.get(ENV_VARS[self.provider], "").strip()
        if not key:
            raise ProviderAuthError(self.provider, ENV_VARS[self.provider], "no API key configured")
        return key

    async def clone(self, audio: npt.NDArray[np.float32], rate: int) -> VoiceEntry:
        try:
            x = await self._run(prepare, audio, rate)
            f0, voiced = await self._run(median_f0, x)
        except NotEnoughSpeech as exc:
            raise UnusableAudio(str(exc)) from exc
        if voiced < MIN_VOICED_SECONDS:
            raise UnusableAudio(f"only {voiced:.2f} s of voiced speech found; at least {MIN_VOICED_SECONDS} s is "
                                "needed to clone a voice")
        sample = wav_bytes(np.asarray(x, dtype=np.float32) * 0.9, 16000)
        name = new_cloned_name()
        key = self._key()
        import httpx

        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) as http:
            if self.provider == "elevenlabs":
                voice_id = await self._elevenlabs(http, key, name, sample)
                tts: Any = ElevenLabsTTS(voice=Voice(id=voice_id, name=name, category="cloned"))
            else:
                voice_id = await self._cartesia(http, key, name, sample)
                tts = CartesiaTTS(voice=voice_id, language=self.language)
        self.ctx.health.ok(f"clone.{self.provider}")
        entry = VoiceEntry(
            name=name, language=self.language, gender=gender_from_f0(f0), tts=tts,  # type: ignore[arg-type]
            clone_info={"method": f"{self.provider}-cloning", "provider_voice_id": voice_id,
                        "sample": {"f0_hz": round(float(f0), 1), "voiced_seconds": round(float(voiced), 2),
                                   "seconds": round(len(x) / 16000, 2)}},
        )
        stored = self.store.add_clone(entry)
        log.info("cloned voice %s at %s (voice id %s)", stored.name, self.provider, voice_id)
        return stored

    async def _post(self, http: Any, url: str, **kwargs: Any) -> dict[str, Any]:
        async def attempt() -> dict[str, Any]:
            response = await http.post(url, **kwargs)
            if response.status_code >= 400:
                raise http_error(self.provider, response.status_code, response.text,
                                 env_var=ENV_VARS[self.provider])
            try:
                data = response.json()
            except ValueError:
                raise ProviderError(self.provider, "the clone endpoint did not answer JSON") from None
            return data if isinstance(data, dict) else {}

        try:
            return await with_retries(attempt, provider=self.provider)
        except ProviderError as exc:
            self.ctx.health.error(f"clone.{self.provider}", "auth" if isinstance(exc, ProviderAuthError) else (
                "rate_limited" if exc.status == 429 else "server"), str(exc))
            raise

    async def _elevenlabs(self, http: Any, key: str, name: str, sample: bytes) -> str:
        data = await self._post(
            http, f"{self.origin}/v1/voices/add", headers={"xi-api-key": key},
            data={"name": name, "description": "Cloned through telebridge", "remove_background_noise": "false"},
            files=[("files", (f"{name}.wav", sample, "audio/wav"))])
        voice_id = data.get("voice_id")
        if not isinstance(voice_id, str) or not voice_id:
            raise ProviderError("elevenlabs", "the voice add response has no voice_id")
        return voice_id

    async def _cartesia(self, http: Any, key: str, name: str, sample: bytes) -> str:
        data = await self._post(
            http, f"{self.origin}/voices/clone",
            headers={"X-API-Key": key, "Authorization": f"Bearer {key}", "Cartesia-Version": CARTESIA_VERSION},
            data={"name": name, "description": "Cloned through telebridge", "language": self.language,
                  "enhance": "false"},
            files=[("clip", (f"{name}.wav", sample, "audio/wav"))])
        voice_id = data.get("id")
        if not isinstance(voice_id, str) or not voice_id:
            raise ProviderError("cartesia", "the clone response has no id")
        return voice_id
