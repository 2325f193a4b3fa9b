"""A fake Google Cloud Text-to-Speech: the OAuth2 token endpoint and ``POST /v1/text:synthesize``.

* ``POST /token`` (the service account's ``token_uri``): the JWT-bearer grant. The assertion's RS256 signature is
  verified with the test keypair's public key, and its ``iss``/``aud``/``scope``/``exp`` claims are checked;
  otherwise ``400 {"error": "invalid_grant", ...}`` as Google answers.
* ``POST /v1/text:synthesize``: needs ``Authorization: Bearer <a token this fake issued>``, else 401 with
  Google's error JSON. Answers ``{"audioContent": base64}`` with real Piper speech: LINEAR16 / MULAW inside a WAV
  header (optionally with an extra ``LIST`` chunk, so the header is not 44 bytes), MP3 encoded with PyAV.

Fault knobs: ``statuses`` (answered in order before succeeding, with Google's error JSON), ``slow_first_byte``,
``disconnects`` (that many replies are cut off mid-body), ``malformed`` (that many replies lack audio),
``token_lifetime``, :meth:`revoke_tokens`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fakes.speech import speech_backend
from telebridge.audio.g711 import ulaw_encode

GOOGLE_AUDIENCE = "https://oauth2.googleapis.com/token"
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
MESSAGES = {
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
         "valid authentication credential.",
    403: "Cloud Text-to-Speech API has not been used in project test-project before or it is disabled.",
    429: "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute'.",
}


def google_error(status: int, message: str | None = None) -> JSONResponse:
    error = {"code": status, "message": message or MESSAGES.get(status, "Internal error encountered."),
             "status": STATUS_NAMES.get(status, "UNKNOWN")}
    return JSONResponse({"error": error}, status_code=status)


def wav(payload: bytes, rate: int, *, tag: int, bits: int, extra_chunk: bool) -> bytes:
    fmt = struct.pack("<HHIIHH", tag, 1, rate, rate * bits // 8, bits // 8, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if extra_chunk:
        info = b"INFOISFT" + struct.pack("<I", 6) + b"fake\x00\x00"
        chunks += b"LIST" + struct.pack("<I", len(info)) + info
    chunks += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def mp3(pcm: np.ndarray, rate: int) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout="mono")
        step = 1152
        for start in range(0, len(pcm), step):
            frame = av.AudioFrame.from_ndarray(pcm[start:start + step].reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class FakeGoogleTTS:
    public_key: Any
    client_email: str
    key_id: str
    statuses: list[int] = field(default_factory=list)
    slow_first_byte: float = 0.0
    disconnects: int = 0
    malformed: int = 0
    extra_wav_chunk: bool = False
    token_lifetime: int = 3600
    token_requests: int = 0
    token_rejections: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    last_pcm: np.ndarray | None = None
    # (request received, response body yielded) per text:synthesize, time.perf_counter() seconds: the fake's own
    # time to first byte (Google answers the whole audio in one JSON body), which benchmarks subtract.
    first_bytes: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._tokens: set[str] = set()
        self.issued: list[str] = []
        self.app = Starlette(routes=[
            Route("/token", self._token, methods=["POST"]),
            Route("/v1/text:synthesize", self._synthesize, methods=["POST"]),
        ])

    def revoke_tokens(self) -> None:
        self._tokens.clear()

    # --- OAuth2 ---------------------------------------------------------------------------------------------
    def _verify(self, assertion: str, audience: str) -> str | None:
        """Why the assertion is refused, or None."""
        try:
            head, body, sig = assertion.split(".")
            header, claims = json.loads(_b64url(head)), json.loads(_b64url(body))
            self.public_key.verify(_b64url(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "Invalid JWT Signature."
        except (ValueError, TypeError):
            return "Invalid JWT."
        now = time.time()
        if header.get("alg") != "RS256" or header.get("kid") != self.key_id:
            return "Invalid JWT header."
        # google-auth signs for Google's token endpoint whatever token_uri says; accept that or our own URL.
        if claims.get("iss") != self.client_email or claims.get("aud") not in (GOOGLE_AUDIENCE, audience):
            return "Invalid JWT: iss/aud."
        if "https://www.googleapis.com/auth/cloud-platform" not in str(claims.get("scope", "")).split():
            return "Invalid JWT: scope."
        if not claims.get("iat", 0) - 60 <= now < claims.get("exp", 0):
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
        return None

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        form = await request.form()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return JSONResponse({"error": "unsupported_grant_type", "error_description": "Invalid grant_type."}, 400)
        reason = self._verify(str(form.get("assertion", "")), str(request.url))
        if reason is not None:
            self.token_rejections.append(reason)
            return JSONResponse({"error": "invalid_grant", "error_description": reason}, 400)
        token = f"ya29.fake-{len(self.issued) + 1}-{time.monotonic_ns()}"
        self._tokens.add(token)
        self.issued.append(token)
        return JSONResponse({"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"})

    # --- synthesis ------------------------------------------------------------------------------------------
    async def _synthesize(self, request: Request) -> Response:
        received = time.perf_counter()
        auth = request.headers.get("authorization", "")
        record: dict[str, Any] = {"path": request.url.path, "query": dict(request.query_params),
                                  "bearer": auth.startswith("Bearer ") and auth[7:] in self.issued}
        self.requests.append(record)
        if not auth.startswith("Bearer ") or auth[7:] not in self._tokens:
            return google_error(401)
        if self.statuses:
            return google_error(self.statuses.pop(0))
        body = record["body"] = await request.json()
        text = (body.get("input") or {}).get("text")
        voice, config = body.get("voice") or {}, body.get("audioConfig") or {}
        encoding = config.get("audioEncoding")
        if not text or not voice.get("languageCode") or encoding not in ("LINEAR16", "MULAW", "MP3"):
            return google_error(400, "Invalid request: input.text, voice.languageCode and audioEncoding are required.")
        rate = int(config.get("sampleRateHertz") or 24000)
        pcm = await speech_backend().synthesize(text, rate)
        self.last_pcm = pcm
        if encoding == "LINEAR16":
            audio = wav(pcm.astype("<i2").tobytes(), rate, tag=1, bits=16, extra_chunk=self.extra_wav_chunk)
        elif encoding == "MULAW":
            audio = wav(ulaw_encode(pcm), rate, tag=7, bits=8, extra_chunk=self.extra_wav_chunk)
        else:
            audio = await asyncio.to_thread(mp3, pcm, rate)
        payload = json.dumps({"audioContent": base64.b64encode(audio).decode()}).encode()
        if self.malformed:
            self.malformed -= 1
            payload = b'{"audioContent": "%%% not base64 %%%"}'
        if self.slow_first_byte:
            await asyncio.sleep(self.slow_first_byte)
        cut = False
        if self.disconnects:
            self.disconnects -= 1
            cut = True
        return StreamingResponse(self._body(payload, cut, received), media_type="application/json",
                                 headers={"content-length": str(len(payload))})

    async def _body(self, payload: bytes, cut: bool, received: float | None = None) -> AsyncIterator[bytes]:
        if received is not None:
            self.first_bytes.append((received, time.perf_counter()))
        if cut:
            yield payload[: len(payload) // 2]
            raise ConnectionResetError("fake: connection cut mid-body")
        yield payload
