"""Azure Speech speech-to-text through the REST API for short audio (``STT.Azure``).

One request per utterance (the VAD already cut it)::

    POST /speech/recognition/conversation/cognitiveservices/v1?language=en-US&format=detailed
    Content-Type: audio/wav; codecs=audio/pcm; samplerate=16000
    Accept: application/json
    Ocp-Apim-Subscription-Key: ...

The answer is JSON: ``RecognitionStatus`` (Success, NoMatch, InitialSilenceTimeout, BabbleTimeout, Error) and,
with ``format=detailed``, ``NBest[0].Display`` (``DisplayText`` in the simple format). This is an utterance
engine: the REST API returns final results only (no interim words, so no streaming barge-in from it); Azure's
streaming recognition needs its WebSocket protocol / Speech SDK.

Config fields:

* ``languages``: the first is the recognition ``language``. The REST API for short audio recognizes exactly one
  language per request; automatic language identification (choosing among several) exists only in the Speech
  SDK / WebSocket API. With several languages we recognize in the first, unless the caller of
  :meth:`AzureSTT.transcribe` names a language, which is matched against the list ("es" → "es-MX").
* ``sample_rate`` / ``num_channels``: the WAV sent is at that rate (telebridge's 16 kHz utterance is resampled)
  with the mono signal copied to each channel, and the ``Content-Type`` names the rate. Azure documents 16 kHz
  mono for this API, so anything else is logged once as outside the documented formats.
* ``region``, ``api_key``, ``base_url``: see :mod:`telebridge.providers.azure_common`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np

from telebridge.audio.pcm import to_int16
from telebridge.audio.resample import resample_once
from telebridge.providers.azure_common import PROVIDER, AzureClient, failure, user_agent
from telebridge.providers.context import ProviderContext
from telebridge.providers.errors import ProviderError
from telebridge.providers.retry import with_retries
from telebridge.providers.stt.base import STT_SAMPLE_RATE, Transcript

__all__ = ["AzureSTT", "create", "recognition_url", "wav_body", "parse_result", "pick_language"]

log = logging.getLogger("telebridge.providers.azure")

PATH = "/speech/recognition/conversation/cognitiveservices/v1"
EMPTY_STATUSES = ("NoMatch", "InitialSilenceTimeout", "BabbleTimeout")


# --- sans-I/O: request and result ---------------------------------------------------------------------------
def pick_language(languages: list[str], requested: str | None = None) -> str:
    """The recognition locale: ``requested`` when given (matched to the configured list by prefix), else the
    first configured one."""
    configured = [lang for lang in languages if lang] or ["en-US"]
    if requested:
        want = requested.strip()
        for lang in configured:
            if lang.lower() == want.lower():
                return lang
        for lang in configured:
            if lang.lower().split("-")[0] == want.lower().split("-")[0]:
                return lang
        if "-" in want:
            return want
    return configured[0]


def recognition_url(origin: str, language: str) -> str:
    return f"{origin}{PATH}?{urlencode({'language': language, 'format': 'detailed'})}"


def content_type(sample_rate: int) -> str:
    return f"audio/wav; codecs=audio/pcm; samplerate={sample_rate}"


def wav_body(audio16k: np.ndarray, sample_rate: int = STT_SAMPLE_RATE, num_channels: int = 1) -> bytes:
    """16-bit PCM WAV at ``sample_rate`` with ``num_channels`` copies of the mono signal."""
    x = np.asarray(audio16k, dtype=np.float32).reshape(-1)
    if sample_rate != STT_SAMPLE_RATE and x.size:
        x = resample_once(x, STT_SAMPLE_RATE, sample_rate)
    pcm = to_int16(x)
    if num_channels > 1:
        pcm = np.repeat(pcm, num_channels)
    data = pcm.astype("<i2").tobytes()
    block = 2 * num_channels
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1, num_channels,
                         sample_rate, sample_rate * block, block, 16, b"data", len(data))
    return header + data


def parse_result(body: bytes, *, language: str, duration: float) -> Transcript:
    """Azure's JSON answer → :class:`Transcript` ("" for NoMatch / silence / babble)."""
    try:
        result = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise failure("malformed recognition result (not JSON)", "protocol", retryable=False) from exc
    if not isinstance(result, dict) or not isinstance(result.get("RecognitionStatus"), str):
        raise failure("malformed recognition result (no RecognitionStatus)", "protocol", retryable=False)
    status = result["RecognitionStatus"]
    if status in EMPTY_STATUSES:
        return Transcript(text="", language=language, duration=duration)
    if status == "Error":
        raise failure("the recognition service reported an internal error", "server", retryable=True)
    if status != "Success":
        raise failure(f"unexpected RecognitionStatus {status[:40]!r}", "protocol", retryable=False)
    text: Any = None
    nbest = result.get("NBest")
    if isinstance(nbest, list) and nbest and isinstance(nbest[0], dict):
        text = nbest[0].get("Display")
    if not isinstance(text, str):
        text = result.get("DisplayText")
    if not isinstance(text, str):
        raise failure("malformed recognition result (no Display text)", "protocol", retryable=False)
    return Transcript(text=text.strip(), language=language, duration=duration)


# --- the engine ---------------------------------------------------------------------------------------------
class AzureSTT:
    """Utterance transcription with Azure's REST API for short audio (safe for concurrent calls)."""

    def __init__(self, cfg: Any, ctx: ProviderContext) -> None:
        self.cfg = cfg
        self.client = AzureClient("stt", cfg, ctx)
        self.sample_rate = int(cfg.sample_rate)
        self.num_channels = int(cfg.num_channels)
        self.languages = list(cfg.languages) or ["en-US"]
        self.response_timeout = 15.0  # seconds from sending the audio to the whole JSON answer
        if self.sample_rate != STT_SAMPLE_RATE or self.num_channels != 1:
            log.warning("azure STT: sending %d Hz, %d-channel WAV; Azure documents 16 kHz mono for the REST API "
                        "for short audio", self.sample_rate, self.num_channels)
        if len(self.languages) > 1:
            log.info("azure STT: recognizing in %s; the REST API for short audio cannot identify the language "
                     "among %s (that needs Azure's streaming SDK/WebSocket API)", self.languages[0], self.languages)

    def __repr__(self) -> str:
        return f"AzureSTT(languages={self.languages!r}, client={self.client!r})"

    async def check(self) -> None:
        await self.client.check()

    async def transcribe(self, audio: np.ndarray, *, language: str | None = None) -> Transcript:
        lang = pick_language(self.languages, language)
        duration = float(len(audio)) / STT_SAMPLE_RATE
        try:
            self.client.require_usable()
            body = wav_body(audio, self.sample_rate, self.num_channels)
            url = recognition_url(self.client.endpoints.stt, lang)
            headers = self.client.auth_headers() | {
                "Content-Type": content_type(self.sample_rate),
                "Accept": "application/json",
                "User-Agent": user_agent(),
            }
            result = await with_retries(lambda: self._attempt(url, headers, body, lang, duration),
                                        provider=PROVIDER, policy=self.client.retry_policy)
        except ProviderError as exc:
            self.client.report(exc)
            raise
        self.client.ctx.health.ok(self.client.health_name)
        return result

    async def _attempt(self, url: str, headers: dict[str, str], body: bytes, lang: str, duration: float
                       ) -> Transcript:
        client = self.client
        try:
            async with asyncio.timeout(client.connect_timeout + self.response_timeout):
                response = await client.http().post(
                    url, headers=headers, content=body,
                    timeout=httpx.Timeout(connect=client.connect_timeout, read=self.response_timeout,
                                          write=client.connect_timeout, pool=client.connect_timeout))
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise failure("no recognition result in time", "timeout", retryable=True) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise failure(f"connection dropped ({type(exc).__name__})", "disconnected", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise failure(f"request failed ({type(exc).__name__})", "disconnected", retryable=True) from exc
        if response.status_code != 200:
            error = client.status_error(response, response.content)
            if error.retryable:
                await client.pause_for_retry_after(response)
            raise error
        return parse_result(response.content, language=lang, duration=duration)

    async def aclose(self) -> None:
        await self.client.aclose()


def create(cfg: Any, ctx: ProviderContext) -> AzureSTT:
    return AzureSTT(cfg, ctx)
