"""Google Cloud Text-to-Speech (``POST /v1/text:synthesize``) with service-account credentials.

* Auth: an OAuth2 access token minted by google-auth from the service-account dict (``TTS.Google.credentials``
  or ``$GOOGLE_CREDENTIALS``): a JWT signed with the account's private key, exchanged at its ``token_uri``. The
  exchange is a blocking HTTP call, so it runs in a worker thread (never on the event loop), and the token is
  cached until five minutes before it expires. The token goes in ``Authorization: Bearer``; nothing in a URL.
* v1 has no streaming for standard voices: each sentence is one request whose audio arrives as one chunk (calls
  get :class:`~telebridge.providers.tts.base.OneShotSession` over this engine; barge-in abandons the request).
* Phone calls ask for ``MULAW`` at 8 kHz unless the agent chose ``encoding``. ``LINEAR16``/``MULAW`` replies
  carry a WAV header, which is parsed (RIFF chunks walked, not a fixed 44 bytes) and dropped; MP3 is decoded
  with PyAV.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import threading
import time
from typing import Any

import httpx
import numpy as np

from telebridge.audio.g711 import ulaw_decode
from telebridge.audio.pcm import to_int16
from telebridge.audio.resample import resample_once
from telebridge.audio.wav import WavError, read_wav
from telebridge.providers.checks import CheckCache
from telebridge.providers.context import PHONE_RATE, ProviderContext
from telebridge.providers.errors import ProviderAuthError, ProviderError, error_kind, http_error, provider_error
from telebridge.providers.per_loop import PerLoop
from telebridge.providers.retry import with_retries
from telebridge.providers.tts.decoding import decode_compressed, pcm16

__all__ = ["GoogleRequest", "GoogleTTS", "create"]

PROVIDER = "google"
HEALTH = "tts.google"
ENV_VAR = "GOOGLE_CREDENTIALS"
PUBLIC_ORIGIN = "https://texttospeech.googleapis.com"
SYNTHESIZE_PATH = "/v1/text:synthesize"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
TOKEN_MARGIN = 300.0  # s: a token this close to expiry is refreshed first
_GENDERS = {"male": "MALE", "female": "FEMALE", "neutral": "NEUTRAL"}


_err = functools.partial(provider_error, PROVIDER)


def _kind(exc: ProviderError) -> str:
    return error_kind(exc, default="protocol")


def _google_message(response: httpx.Response) -> str:
    """``{"error": {"code", "message", "status"}}`` → ``"STATUS: message"`` (else the raw text)."""
    try:
        error = response.json()["error"]
        return f"{error.get('status', '')}: {error.get('message', '')}".strip(": ")
    except (ValueError, KeyError, TypeError, AttributeError):
        return response.text


class GoogleRequest:
    """Sans-I/O: the request body for a config, and the reply's audio decoded to int16."""

    def __init__(self, cfg: Any, *, phone: bool) -> None:
        if phone:
            self.encoding, self.sample_rate = "MULAW", PHONE_RATE
        else:
            self.encoding = "MP3" if cfg.encoding == "mp3" else "LINEAR16"  # "wav" is LINEAR16 with its header
            self.sample_rate = int(cfg.sample_rate)
        voice: dict[str, Any] = {"languageCode": cfg.language}
        if cfg.voice_name:
            voice["name"] = cfg.voice_name
        if cfg.gender:
            voice["ssmlGender"] = _GENDERS[cfg.gender]
        self.voice = voice
        audio: dict[str, Any] = {"audioEncoding": self.encoding, "sampleRateHertz": self.sample_rate}
        # Sent only when not neutral: some voices (Journey) refuse a request that carries them at all.
        if cfg.speaking_rate != 1.0:
            audio["speakingRate"] = cfg.speaking_rate
        if cfg.pitch != 0.0:
            audio["pitch"] = cfg.pitch
        profiles = [p.strip() for p in cfg.effects_profile_id.split(",") if p.strip()]
        if profiles:
            audio["effectsProfileId"] = profiles
        self.audio_config = audio

    def body(self, text: str) -> dict[str, Any]:
        return {"input": {"text": text}, "voice": self.voice, "audioConfig": self.audio_config}

    @staticmethod
    def audio_content(response: httpx.Response) -> bytes:
        try:
            content = response.json()["audioContent"]
            return base64.b64decode(content, validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _err("malformed response (no base64 audioContent)", "protocol") from None

    def decode(self, audio: bytes) -> np.ndarray:
        """LINEAR16/MULAW (WAV header or raw) → int16 at ``sample_rate``. MP3 is :meth:`decode_mp3`."""
        if audio[:4] in (b"RIFF", b"RF64"):
            try:
                samples, rate = read_wav(audio)
            except WavError as exc:
                raise _err(f"malformed WAV audio ({exc})", "protocol") from None
            if rate != self.sample_rate:
                samples = resample_once(samples, rate, self.sample_rate)
            return to_int16(samples)
        if self.encoding == "MULAW":
            return ulaw_decode(audio)
        return pcm16(audio)

    def decode_mp3(self, audio: bytes) -> np.ndarray:
        import av

        try:
            return decode_compressed(audio, self.sample_rate)
        except (av.error.FFmpegError, ValueError) as exc:
            raise _err(f"undecodable MP3 audio ({type(exc).__name__})", "protocol") from None


class _TimedRequest:
    """google-auth's requests transport with a bounded timeout (its default is 120 s)."""

    def __init__(self, timeout: float) -> None:
        from google.auth.transport.requests import Request

        self._request = Request()
        self._timeout = timeout

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None, timeout: Any = None,
                 **kwargs: Any) -> Any:
        return self._request(url, method=method, body=body, headers=headers, timeout=self._timeout, **kwargs)


class GoogleTTS:
    """Shared by every call with this configuration: the credentials, the cached token, one HTTP client."""

    connect_timeout = 10.0
    first_byte_timeout = 15.0
    token_timeout = 10.0

    def __init__(self, cfg: Any, ctx: ProviderContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.origin = ctx.origin(PROVIDER, cfg, PUBLIC_ORIGIN)
        self.request = GoogleRequest(cfg, phone=ctx.wants_phone_format(cfg))
        self.sample_rate = self.request.sample_rate
        self._credentials: Any = None
        self._token: str | None = None
        self._token_deadline = 0.0  # monotonic time after which the token must be refreshed
        self._token_lock = threading.Lock()
        self._http: PerLoop[httpx.AsyncClient] = PerLoop(lambda: httpx.AsyncClient(
            timeout=httpx.Timeout(self.first_byte_timeout, connect=self.connect_timeout)))
        self._check = CheckCache()

    def __repr__(self) -> str:
        return f"GoogleTTS(origin={self.origin!r}, encoding={self.request.encoding!r})"

    # --- credentials ----------------------------------------------------------------------------------------
    def _refresh_blocking(self) -> str:
        """Runs in a worker thread. One refresh at a time; a thread that waited reuses the fresh token."""
        from google.auth import exceptions
        from google.oauth2 import service_account

        with self._token_lock:
            if self._token and time.monotonic() < self._token_deadline:
                return self._token
            if self._credentials is None:
                info = self.cfg.credentials.get_secret_value() if self.cfg.credentials is not None else None
                if not info:
                    raise ProviderAuthError(PROVIDER, ENV_VAR, "no service-account credentials configured")
                try:
                    self._credentials = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
                except (ValueError, KeyError, TypeError, exceptions.GoogleAuthError):
                    raise ProviderAuthError(PROVIDER, ENV_VAR, "credentials are not a service-account key") from None
            creds = self._credentials
            try:
                creds.refresh(_TimedRequest(self.token_timeout))
            except exceptions.RefreshError as exc:
                if getattr(exc, "retryable", False):
                    raise _err("token endpoint failed", "server", retryable=True) from None
                raise ProviderAuthError(PROVIDER, ENV_VAR, "token request refused") from None
            except exceptions.TransportError:
                raise _err("token endpoint unreachable", "disconnected", retryable=True) from None
            lifetime = 3600.0
            if creds.expiry is not None:
                from datetime import datetime, timezone

                expiry = creds.expiry if creds.expiry.tzinfo else creds.expiry.replace(tzinfo=timezone.utc)
                lifetime = (expiry - datetime.now(timezone.utc)).total_seconds()
            self._token = creds.token
            self._token_deadline = time.monotonic() + lifetime - TOKEN_MARGIN
            return str(self._token)

    async def _access_token(self) -> str:
        token = self._token
        if token and time.monotonic() < self._token_deadline:
            return token
        return await with_retries(lambda: asyncio.to_thread(self._refresh_blocking), provider=PROVIDER)

    def _forget_token(self) -> None:
        self._token_deadline = 0.0  # no lock: a refresh may hold it for seconds and this runs on the loop

    async def check(self) -> None:
        """Minting (or holding) a valid token is the credential check. Cached: success 5 min, failure 30 s."""
        async def probe() -> None:
            try:
                await self._access_token()
            except ProviderError as exc:
                self.ctx.health.error(HEALTH, _kind(exc), str(exc))
                raise
            self.ctx.health.ok(HEALTH)

        await self._check.run(probe)

    # --- synthesis ------------------------------------------------------------------------------------------
    async def _attempt(self, text: str) -> bytes:
        token = await self._access_token()
        try:
            response = await self._http.get().post(self.origin + SYNTHESIZE_PATH, json=self.request.body(text),
                                                  headers={"Authorization": f"Bearer {token}"})
        except httpx.TimeoutException:
            raise _err("text:synthesize timed out", "timeout", retryable=True) from None
        except httpx.HTTPError as exc:
            raise _err(f"text:synthesize failed ({type(exc).__name__})", "disconnected", retryable=True) from None
        if response.status_code == 401:
            self._forget_token()  # revoked or expired early: the next request mints a new one
        if response.status_code >= 400:
            raise http_error(PROVIDER, response.status_code, _google_message(response), env_var=ENV_VAR)
        return self.request.audio_content(response)

    async def synthesize(self, text: str) -> np.ndarray:
        """One sentence: int16 mono at ``sample_rate``."""
        if not text.strip():
            return np.zeros(0, dtype=np.int16)
        try:
            audio = await with_retries(lambda: self._attempt(text), provider=PROVIDER)
            if self.request.encoding == "MP3":
                pcm = await asyncio.to_thread(self.request.decode_mp3, audio)
            else:
                pcm = self.request.decode(audio)
        except ProviderError as exc:
            self.ctx.health.error(HEALTH, _kind(exc), str(exc))
            raise
        self.ctx.health.ok(HEALTH)
        return pcm


def create(cfg: Any, ctx: ProviderContext) -> GoogleTTS:
    return GoogleTTS(cfg, ctx)
