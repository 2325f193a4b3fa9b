"""Azure Speech text-to-speech through the REST API (``TTS.Azure``), streamed.

Each sentence is one request whose response body is the audio, streamed as Azure produces it::

    POST /cognitiveservices/v1                       (custom voice: ?deploymentId={endpoint_id})
    Content-Type: application/ssml+xml
    X-Microsoft-OutputFormat: raw-8khz-8bit-mono-mulaw | raw-24khz-16bit-mono-pcm | ...
    User-Agent: telebridge/<version>
    Ocp-Apim-Subscription-Key: ...

    <speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">
      <voice name="en-US-JennyNeural"><prosody rate="1.2" volume="80" pitch="high">text</prosody></voice>
    </speak>

Config fields:

* ``voice``: the voice name (a custom voice's model name with ``endpoint_id``). None: a neural voice for
  ``language`` (en-US-JennyNeural for English/unknown).
* ``language``: the SSML ``xml:lang``; None: taken from the voice name ("de-DE-KatjaNeural" → de-DE), else en-US.
* ``prosody``: ``rate`` 0.5–2.0 is sent as Azure's multiplier form ("1.25"), named rates as is; ``volume``
  0–100 as Azure's absolute volume ("75"), named levels as is; ``pitch`` names as is.
* ``endpoint_id``: a custom neural voice deployment: the custom voice host and ``?deploymentId=``.
* ``sample_rate``: ``raw-{rate}-16bit-mono-pcm``. On a phone call, unless the agent set ``sample_rate``
  explicitly, Azure is asked for ``raw-8khz-8bit-mono-mulaw`` (what the phone line carries; decoded to int16 at
  8 kHz here), so nothing is resampled.

The text is XML-escaped: "<", "&" in a reply are spoken, never parsed as SSML. A per-call session reuses the
engine's ``httpx.AsyncClient`` (a warm connection); cancelling a reply closes its response, which is how a
REST synthesis is stopped at Azure.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape, quoteattr

import httpx
import numpy as np

from telebridge.providers.azure_common import PROVIDER, AzureClient, failure, user_agent
from telebridge.providers.context import PHONE_RATE, ProviderContext
from telebridge.providers.errors import ProviderConfigError, ProviderError
from telebridge.providers.retry import with_retries
from telebridge.providers.tts.decoding import RawDecoder

__all__ = ["AzureTTS", "AzureTTSSession", "create", "output_format", "build_ssml", "default_voice",
           "PCM_FORMATS", "MULAW_FORMAT"]

PATH = "/cognitiveservices/v1"
MULAW_FORMAT = "raw-8khz-8bit-mono-mulaw"
PCM_FORMATS = {
    8000: "raw-8khz-16bit-mono-pcm",
    16000: "raw-16khz-16bit-mono-pcm",
    22050: "raw-22050hz-16bit-mono-pcm",
    24000: "raw-24khz-16bit-mono-pcm",
    44100: "raw-44100hz-16bit-mono-pcm",
    48000: "raw-48khz-16bit-mono-pcm",
}
DEFAULT_VOICES = {
    "en-US": "en-US-JennyNeural", "en-GB": "en-GB-SoniaNeural", "en-AU": "en-AU-NatashaNeural",
    "en-CA": "en-CA-ClaraNeural", "en-IN": "en-IN-NeerjaNeural", "de-DE": "de-DE-KatjaNeural",
    "fr-FR": "fr-FR-DeniseNeural", "fr-CA": "fr-CA-SylvieNeural", "es-ES": "es-ES-ElviraNeural",
    "es-MX": "es-MX-DaliaNeural", "it-IT": "it-IT-ElsaNeural", "pt-BR": "pt-BR-FranciscaNeural",
    "pt-PT": "pt-PT-RaquelNeural", "nl-NL": "nl-NL-ColetteNeural", "ja-JP": "ja-JP-NanamiNeural",
    "ko-KR": "ko-KR-SunHiNeural", "zh-CN": "zh-CN-XiaoxiaoNeural", "hi-IN": "hi-IN-SwaraNeural",
}
MULTILINGUAL_VOICE = "en-US-JennyMultilingualNeural"
_VOICE_LOCALE = re.compile(r"^([a-z]{2,3}-[A-Z]{2,4}|[a-z]{2,3}-[A-Z][a-z]{3}-[A-Z]{2})-")
# Characters XML 1.0 forbids (an SSML body containing one is rejected with 400).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# --- sans-I/O: format, voice, SSML --------------------------------------------------------------------------
def output_format(sample_rate: int, *, phone: bool) -> tuple[str, int]:
    """(``X-Microsoft-OutputFormat``, rate of the decoded audio)."""
    if phone:
        return MULAW_FORMAT, PHONE_RATE
    try:
        return PCM_FORMATS[int(sample_rate)], int(sample_rate)
    except KeyError:
        raise ProviderConfigError(PROVIDER, f"no raw PCM output format at {sample_rate} Hz "
                                            f"(Azure offers {sorted(PCM_FORMATS)})") from None


def voice_locale(voice: str | None) -> str | None:
    m = _VOICE_LOCALE.match(voice or "")
    return m.group(1) if m else None


def default_voice(language: str | None) -> str:
    if not language:
        return DEFAULT_VOICES["en-US"]
    for locale, voice in DEFAULT_VOICES.items():
        if locale.lower() == language.lower():
            return voice
    base = language.lower().split("-")[0]
    for locale, voice in DEFAULT_VOICES.items():
        if locale.lower().split("-")[0] == base:
            return voice
    return MULTILINGUAL_VOICE


def _number(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")


def prosody_attributes(prosody: Any) -> dict[str, str]:
    if prosody is None:
        return {}
    attrs: dict[str, str] = {}
    rate, volume, pitch = prosody.rate, prosody.volume, prosody.pitch
    if rate is not None:
        attrs["rate"] = rate if isinstance(rate, str) else _number(float(rate))  # multiplier: 1 = unchanged
    if volume is not None:
        attrs["volume"] = volume if isinstance(volume, str) else _number(float(volume))  # absolute 0..100
    if pitch is not None:
        attrs["pitch"] = str(pitch)
    return attrs


def build_ssml(text: str, *, voice: str, language: str, prosody: Any = None) -> str:
    body = escape(_XML_INVALID.sub(" ", text))
    attrs = prosody_attributes(prosody)
    if attrs:
        rendered = " ".join(f"{name}={quoteattr(value)}" for name, value in attrs.items())
        body = f"<prosody {rendered}>{body}</prosody>"
    return (f'<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang={quoteattr(language)}>'
            f"<voice name={quoteattr(voice)}>{body}</voice></speak>")


# --- the engine ---------------------------------------------------------------------------------------------
class AzureTTS:
    """Sentence synthesis with Azure's REST API; :meth:`open_session` streams per call."""

    def __init__(self, cfg: Any, ctx: ProviderContext) -> None:
        self.cfg = cfg
        self.client = AzureClient("tts", cfg, ctx)
        self.client.first_byte_timeout = 3.0
        self.phone = ctx.wants_phone_format(cfg, "sample_rate")
        self._format_error: ProviderConfigError | None = None
        try:
            self.output_format, self.sample_rate = output_format(cfg.sample_rate, phone=self.phone)
        except ProviderConfigError as exc:  # reported at check(), never a crash at create()
            self._format_error, self.output_format, self.sample_rate = exc, "", int(cfg.sample_rate)
        self.language = cfg.language or voice_locale(cfg.voice) or "en-US"
        self.voice = cfg.voice or default_voice(cfg.language)
        self.endpoint_id = cfg.endpoint_id

    def __repr__(self) -> str:
        return f"AzureTTS(voice={self.voice!r}, format={self.output_format!r}, client={self.client!r})"

    def _require_config(self) -> None:
        if self._format_error is not None:
            raise self._format_error
        if self.endpoint_id and not self.cfg.voice:
            raise ProviderConfigError(PROVIDER, "endpoint_id (a custom voice deployment) needs voice= "
                                                "set to the custom voice's model name")
        self.client.require_usable()

    async def check(self) -> None:
        try:
            self._require_config()
        except ProviderError as exc:
            self.client.report(exc)
            raise
        await self.client.check()

    def url(self) -> str:
        if self.endpoint_id:
            return f"{self.client.endpoints.custom_voice}{PATH}?{urlencode({'deploymentId': self.endpoint_id})}"
        return self.client.endpoints.tts + PATH

    def ssml(self, text: str) -> str:
        return build_ssml(text, voice=self.voice, language=self.language, prosody=self.cfg.prosody)

    async def open_session(self, *, call_id: str) -> AzureTTSSession:
        return AzureTTSSession(self, call_id)

    async def synthesize(self, text: str) -> np.ndarray:
        chunks = [c async for c in self.speak(text)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    async def speak(self, text: str, *, track: Any = None) -> AsyncIterator[np.ndarray]:
        """One sentence's audio as it arrives. ``track`` (a session's :class:`_Tracker`) lets the session close
        the response (cancel) while it streams. Retries only before the first audio byte."""
        if not text.strip():
            return
        try:
            self._require_config()
            headers = self.client.auth_headers() | {
                "Content-Type": "application/ssml+xml",
                "X-Microsoft-OutputFormat": self.output_format,
                "User-Agent": user_agent(),
            }
            request = (self.url(), headers, self.ssml(text).encode("utf-8"))
            response, pieces, first = await with_retries(lambda: self._open(*request), provider=PROVIDER,
                                                         policy=self.client.retry_policy)
        except ProviderError as exc:
            self.client.report(exc)
            raise
        decode = RawDecoder("mulaw" if self.output_format == MULAW_FORMAT else "pcm")
        if track is not None:
            track.opened(response)
        try:
            if track is not None and track.cancelled():
                return
            pcm = decode.feed(first)
            if len(pcm):
                yield pcm
            try:
                async for piece in pieces:
                    pcm = decode.feed(piece)
                    if len(pcm):
                        yield pcm
            except (httpx.HTTPError, httpx.StreamError) as exc:
                if track is not None and track.cancelled():
                    return
                error = failure(f"audio stream broke off ({type(exc).__name__})",
                                "timeout" if isinstance(exc, httpx.TimeoutException) else "disconnected",
                                retryable=False)
                self.client.report(error)
                raise error from exc
        finally:
            if track is not None:
                track.finished(response)
            await response.aclose()

    async def _open(self, url: str, headers: dict[str, str], body: bytes
                    ) -> tuple[httpx.Response, AsyncIterator[bytes], bytes]:
        """Send the request; return the response, its byte iterator and the first non-empty piece."""
        client = self.client
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(client.connect_timeout + client.first_byte_timeout):
                http = client.http()
                response = await http.send(http.build_request("POST", url, headers=headers, content=body),
                                           stream=True)
                try:
                    if response.status_code != 200:
                        raise client.status_error(response, await response.aread())
                    ctype = response.headers.get("content-type", "").lower()
                    if ctype.startswith(("application/json", "text/")):
                        raise failure(f"expected audio, got {ctype[:40]}", "protocol", retryable=False)
                    pieces = response.aiter_bytes()
                    first = b""
                    async for piece in pieces:
                        if piece:
                            first = piece
                            break
                    if not first:
                        raise failure("the response carried no audio", "protocol", retryable=False)
                except BaseException:
                    await response.aclose()
                    raise
        except ProviderError as exc:
            if exc.retryable and response is not None:
                await client.pause_for_retry_after(response)
            raise
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise failure(f"no audio within {client.connect_timeout + client.first_byte_timeout:.1f} s",
                          "timeout", retryable=True) from exc
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise failure(f"connection failed ({type(exc).__name__})", "disconnected", retryable=True) from exc
        return response, pieces, first

    async def aclose(self) -> None:
        await self.client.aclose()


class _Tracker:
    """Which responses a reply is streaming from (so cancel can close them)."""

    def __init__(self, session: AzureTTSSession, reply_id: int) -> None:
        self.session = session
        self.reply_id = reply_id

    def opened(self, response: httpx.Response) -> None:
        self.session._active.setdefault(self.reply_id, set()).add(response)

    def finished(self, response: httpx.Response) -> None:
        responses = self.session._active.get(self.reply_id)
        if responses is not None:
            responses.discard(response)
            if not responses:
                self.session._active.pop(self.reply_id, None)

    def cancelled(self) -> bool:
        return self.reply_id in self.session._cancelled or self.session._closed


class AzureTTSSession:
    """One call's synthesis: each sentence is one streamed request on the engine's warm client."""

    def __init__(self, engine: AzureTTS, call_id: str) -> None:
        self.engine = engine
        self.call_id = call_id
        self.sample_rate = engine.sample_rate
        self._active: dict[int, set[httpx.Response]] = {}
        self._cancelled: set[int] = set()
        self._closed = False

    async def stream(self, text: str, *, reply_id: int) -> AsyncIterator[np.ndarray]:
        if self._closed or reply_id in self._cancelled:
            return
        async for chunk in self.engine.speak(text, track=_Tracker(self, reply_id)):
            yield chunk

    async def cancel(self, reply_id: int) -> None:
        """Barge-in: close the reply's open response (Azure stops synthesizing it)."""
        self._cancelled.add(reply_id)
        if len(self._cancelled) > 64:  # reply ids only grow: forget the oldest
            self._cancelled.discard(min(self._cancelled))
        for response in list(self._active.pop(reply_id, ())):
            await response.aclose()

    async def end_reply(self, reply_id: int) -> None:
        return None

    async def aclose(self) -> None:
        self._closed = True
        active, self._active = self._active, {}
        for responses in active.values():
            for response in responses:
                await response.aclose()


def create(cfg: Any, ctx: ProviderContext) -> AzureTTS:
    return AzureTTS(cfg, ctx)
