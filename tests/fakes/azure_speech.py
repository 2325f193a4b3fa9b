"""A fake Azure Speech service speaking the documented REST wire protocols, with real speech behind them.

Routes (one origin stands in for the regional stt / tts / api.cognitive hosts, as ``base_url`` does):

* ``POST /sts/v1.0/issueToken`` -- ``Ocp-Apim-Subscription-Key`` → a bearer token (text/plain).
* ``POST /speech/recognition/conversation/cognitiveservices/v1?language=..&format=simple|detailed`` -- a WAV
  body (``Content-Type: audio/wav; codecs=audio/pcm; samplerate=N``, checked against the WAV header) is
  transcribed by the embedded Whisper and answered in Azure's JSON (``RecognitionStatus``, ``NBest`` / ``DisplayText``,
  ``Offset``/``Duration`` in 100 ns ticks).
* ``POST /cognitiveservices/v1[?deploymentId=..]`` -- SSML (parsed with ``xml.etree``: ``speak`` in the SSML
  namespace, ``version="1.0"``, ``xml:lang``, ``voice name``) is spoken by Piper and streamed back in chunks in
  the ``X-Microsoft-OutputFormat`` asked (raw μ-law 8 kHz or raw 16-bit PCM at the named rate).

Every route checks ``Ocp-Apim-Subscription-Key`` (or ``Authorization: Bearer`` with a token it issued) and
answers Azure's 401 body otherwise. Requests are recorded without the secret. Faults are queued per endpoint
(``fake.fail("tts", Fault("429", retry_after=0.1))``) and consumed one per request: "401", "429", "500", "503",
"slow" (``delay`` before the response starts), "disconnect" (TTS: the connection drops mid-body), "malformed"
(STT: a truncated JSON body), "status:<RecognitionStatus>" (STT), "empty" / "json" (TTS: no audio / an error
document with status 200).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from fakes.speech import speech_backend
from telebridge.audio.g711 import ulaw_encode
from telebridge.audio.resample import resample_once
from telebridge.audio.wav import WavError, read_wav

__all__ = ["FakeAzureSpeech", "Fault", "SSML_NS", "UNAUTHORIZED_BODY"]

SSML_NS = "http://www.w3.org/2001/10/synthesis"
XML_NS = "http://www.w3.org/XML/1998/namespace"
UNAUTHORIZED_BODY = {"error": {"code": "401", "message": (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an "
    "active subscription and use a correct regional API endpoint for your resource.")}}
SECRET_HEADERS = ("ocp-apim-subscription-key", "authorization")
PCM_FORMATS = {"raw-8khz-16bit-mono-pcm": 8000, "raw-16khz-16bit-mono-pcm": 16000,
               "raw-22050hz-16bit-mono-pcm": 22050, "raw-24khz-16bit-mono-pcm": 24000,
               "raw-44100hz-16bit-mono-pcm": 44100, "raw-48khz-16bit-mono-pcm": 48000}
MULAW_FORMAT = "raw-8khz-8bit-mono-mulaw"
TICKS = 10_000_000  # Azure's Offset/Duration unit: 100 ns


@dataclass
class Fault:
    kind: str
    delay: float = 0.0
    retry_after: float | None = None


class _Disconnect(Exception):
    """Raised inside a streaming body: uvicorn drops the connection without ending the chunked body."""


class FakeAzureSpeech:
    def __init__(self, key: str = "azure-fake-key-3f9c1d", *, chunk_ms: int = 100, chunk_delay: float = 0.0) -> None:
        self.key = key
        self.chunk_ms = chunk_ms
        self.chunk_delay = chunk_delay  # seconds between streamed chunks (streaming/cancel tests)
        self.tokens: set[str] = set()
        self.requests: list[dict[str, Any]] = []
        self.ssml: list[dict[str, Any]] = []  # parsed SSML of each accepted synthesis request
        self.wavs: list[dict[str, Any]] = []  # rate/channels/seconds of each accepted recognition request
        self.faults: dict[str, deque[Fault]] = {"stt": deque(), "tts": deque(), "token": deque()}
        self.streams_started = 0
        self.streams_completed = 0
        self.disconnects = 0  # synthesis streams the client closed before the end
        self.chunks_sent = 0  # chunks of the current/last synthesis stream
        # (request received, first audio chunk yielded) per synthesis, time.perf_counter() seconds: the fake's own
        # time to first byte, which benchmarks subtract from what the client saw.
        self.first_bytes: list[tuple[float, float]] = []
        self.app = Starlette(routes=[
            Route("/sts/v1.0/issueToken", self._issue_token, methods=["POST"]),
            Route("/speech/recognition/conversation/cognitiveservices/v1", self._recognize, methods=["POST"]),
            Route("/cognitiveservices/v1", self._synthesize, methods=["POST"]),
        ])

    # --- knobs and records ----------------------------------------------------------------------------------
    def fail(self, endpoint: str, *faults: Fault | str) -> None:
        self.faults[endpoint].extend(f if isinstance(f, Fault) else Fault(f) for f in faults)

    def count(self, endpoint: str) -> int:
        return sum(1 for r in self.requests if r["endpoint"] == endpoint)

    def _record(self, endpoint: str, request: Request) -> dict[str, Any]:
        headers = {k: ("<redacted>" if k.lower() in SECRET_HEADERS else v) for k, v in request.headers.items()}
        entry = {"endpoint": endpoint, "method": request.method, "path": request.url.path,
                 "query": dict(request.query_params), "url": str(request.url), "headers": headers,
                 "auth": "key" if request.headers.get("ocp-apim-subscription-key") else (
                     "bearer" if request.headers.get("authorization") else None)}
        self.requests.append(entry)
        return entry

    def _authorized(self, request: Request) -> bool | None:
        """True: valid; False: wrong credentials; None: none given."""
        key = request.headers.get("ocp-apim-subscription-key")
        auth = request.headers.get("authorization", "")
        if key is not None:
            return secrets.compare_digest(key, self.key)
        if auth.startswith("Bearer "):
            return auth[len("Bearer "):] in self.tokens
        return None

    async def _fault(self, endpoint: str) -> tuple[Fault | None, Response | None]:
        """The next queued fault: an error response to send now, or a fault the handler plays out."""
        if not self.faults[endpoint]:
            return None, None
        fault = self.faults[endpoint].popleft()
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            return None, None
        if fault.kind == "401":
            return fault, JSONResponse(UNAUTHORIZED_BODY, status_code=401)
        if fault.kind == "429":
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
            body = {"error": {"code": "429", "message": "Too many requests. Please retry later."}}
            return fault, JSONResponse(body, status_code=429, headers=headers)
        if fault.kind in ("500", "502", "503"):
            return fault, PlainTextResponse("Service unavailable", status_code=int(fault.kind))
        return fault, None

    def _refuse(self, request: Request, *, missing_status: int = 401) -> Response | None:
        verdict = self._authorized(request)
        if verdict is True:
            return None
        if verdict is None and missing_status == 403:
            return PlainTextResponse("", status_code=403)
        return JSONResponse(UNAUTHORIZED_BODY, status_code=401)

    # --- issueToken ----------------------------------------------------------------------------------------
    async def _issue_token(self, request: Request) -> Response:
        self._record("token", request)
        fault, early = await self._fault("token")
        if early is not None:
            return early
        if request.headers.get("ocp-apim-subscription-key") != self.key:
            return JSONResponse(UNAUTHORIZED_BODY, status_code=401)
        token = "eyJhbGciOiJIUzI1NiJ9." + secrets.token_urlsafe(32)
        self.tokens.add(token)
        return PlainTextResponse(token)

    # --- speech to text -------------------------------------------------------------------------------------
    async def _recognize(self, request: Request) -> Response:
        self._record("stt", request)
        fault, early = await self._fault("stt")
        if early is not None:
            return early
        refused = self._refuse(request, missing_status=403)
        if refused is not None:
            return refused
        language = request.query_params.get("language")
        fmt = request.query_params.get("format", "simple")
        if not language or fmt not in ("simple", "detailed"):
            return PlainTextResponse("language is required; format is simple or detailed", status_code=400)
        rate = _content_type_rate(request.headers.get("content-type", ""))
        if rate is None:
            return PlainTextResponse("Unsupported audio format", status_code=400)
        body = await request.body()
        try:
            audio, wav_rate = read_wav(body)
            channels = int.from_bytes(body[22:24], "little")
        except WavError:
            return PlainTextResponse("Invalid audio", status_code=400)
        if wav_rate != rate:
            return PlainTextResponse(f"samplerate={rate} but the WAV is at {wav_rate} Hz", status_code=400)
        self.wavs.append({"rate": wav_rate, "channels": channels, "seconds": len(audio) / wav_rate})
        if fault is not None and fault.kind == "malformed":
            return Response(b'{"RecognitionStatus": "Success", "NBest": [{"Displ', media_type="application/json")
        if fault is not None and fault.kind.startswith("status:"):
            return JSONResponse({"RecognitionStatus": fault.kind.split(":", 1)[1], "Offset": 0, "Duration": 0})
        audio16 = audio if wav_rate == 16000 else resample_once(audio, wav_rate, 16000)
        text = (await speech_backend().transcribe(audio16)).strip()
        return JSONResponse(_recognition(text, audio16, fmt))

    # --- text to speech -------------------------------------------------------------------------------------
    async def _synthesize(self, request: Request) -> Response:
        received = time.perf_counter()
        self._record("tts", request)
        fault, early = await self._fault("tts")
        if early is not None:
            return early
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/ssml+xml":
            return PlainTextResponse("Unsupported media type", status_code=415)
        fmt = request.headers.get("x-microsoft-outputformat", "")
        rate = 8000 if fmt == MULAW_FORMAT else PCM_FORMATS.get(fmt)
        if rate is None:
            return PlainTextResponse(f"Unsupported output format {fmt!r}", status_code=400)
        agent = request.headers.get("user-agent", "")
        if not agent or len(agent) >= 255:
            return PlainTextResponse("User-Agent is required (fewer than 255 characters)", status_code=400)
        try:
            parsed = parse_ssml(await request.body())
        except ValueError as exc:
            return PlainTextResponse(f"Invalid SSML: {exc}", status_code=400)
        parsed["format"] = fmt
        parsed["deployment_id"] = request.query_params.get("deploymentId")
        self.ssml.append(parsed)
        if fault is not None and fault.kind == "empty":
            return Response(b"", media_type="audio/x-wav")
        if fault is not None and fault.kind == "json":
            return JSONResponse({"error": {"code": "InternalError", "message": "synthesis failed"}})
        pcm = await speech_backend().synthesize(parsed["text"], rate)
        data = ulaw_encode(pcm) if fmt == MULAW_FORMAT else pcm.astype("<i2").tobytes()
        step = (1 if fmt == MULAW_FORMAT else 2) * rate * self.chunk_ms // 1000
        chunks = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
        drop_after = len(chunks) // 2 if fault is not None and fault.kind == "disconnect" else None
        return StreamingResponse(self._stream(chunks, drop_after, received), media_type="audio/x-wav")

    async def _stream(self, chunks: list[bytes], drop_after: int | None, received: float | None = None) -> Any:
        self.streams_started += 1
        self.chunks_sent = 0
        done = False
        try:
            for i, chunk in enumerate(chunks):
                if drop_after is not None and i >= max(1, drop_after):
                    raise _Disconnect("simulated connection drop mid-body")
                if i and self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
                self.chunks_sent += 1
                if i == 0 and received is not None:
                    self.first_bytes.append((received, time.perf_counter()))
                yield chunk
            done = True
            self.streams_completed += 1
        finally:
            if not done and drop_after is None:
                self.disconnects += 1


def _content_type_rate(content_type: str) -> int | None:
    parts = [p.strip().lower() for p in content_type.split(";")]
    if not parts or parts[0] != "audio/wav" or "codecs=audio/pcm" not in parts:
        return None
    for p in parts:
        if p.startswith("samplerate="):
            try:
                return int(p.split("=", 1)[1])
            except ValueError:
                return None
    return None


def _recognition(text: str, audio16: np.ndarray, fmt: str) -> dict[str, Any]:
    duration = int(len(audio16) / 16000 * TICKS)
    if not text:
        loud = audio16.size and float(np.sqrt(np.mean(np.square(audio16, dtype=np.float64)))) >= 1e-3
        return {"RecognitionStatus": "NoMatch" if loud else "InitialSilenceTimeout", "Offset": 0,
                "Duration": duration if loud else 0}
    lexical = " ".join(w.strip(".,!?;:").lower() for w in text.split())
    result: dict[str, Any] = {"RecognitionStatus": "Success", "Offset": 1_800_000, "Duration": duration}
    if fmt == "simple":
        result["DisplayText"] = text
    else:
        result["NBest"] = [{"Confidence": 0.93, "Lexical": lexical, "ITN": lexical, "MaskedITN": lexical,
                            "Display": text}]
    return result


def parse_ssml(body: bytes) -> dict[str, Any]:
    """What the synthesis request asked for; ValueError when it is not valid SSML."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ValueError(str(exc)) from None
    if root.tag != f"{{{SSML_NS}}}speak":
        raise ValueError(f"root element is {root.tag!r}, not speak in the SSML namespace")
    if root.get("version") != "1.0":
        raise ValueError("speak needs version=\"1.0\"")
    lang = root.get(f"{{{XML_NS}}}lang")
    if not lang:
        raise ValueError("speak needs xml:lang")
    voices = root.findall(f"{{{SSML_NS}}}voice")
    if not voices or not all(v.get("name") for v in voices):
        raise ValueError("at least one voice element with a name is required")
    voice = voices[0]
    prosody = voice.find(f"{{{SSML_NS}}}prosody")
    elements = sorted({el.tag.split("}")[-1] for el in root.iter()})
    text = "".join("".join(v.itertext()) for v in voices)
    return {"lang": lang, "voice": voice.get("name"), "prosody": dict(prosody.attrib) if prosody is not None else None,
            "text": text, "elements": elements, "raw": body.decode("utf-8")}

