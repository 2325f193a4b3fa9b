"""``GET /v1/voices`` and ``POST /v1/voices`` (voice cloning uploads).

Upload limits are enforced before any decoding: a declared ``Content-Length`` over the cap is refused unread
(413), a request with no length at all is refused (411 — chunked uploads cannot be sized up front), and the
body is counted while it streams in, so a client that under-declares is cut off at the cap too. Only then is
the multipart form parsed and the ``file`` part decoded.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..providers.errors import ProviderError
from .decode import UnsupportedAudio, UnusableAudio, decode_audio

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..settings import Settings

log = logging.getLogger("telebridge.voices.http")

MULTIPART_OVERHEAD = 16 * 1024  # boundaries and part headers around the file


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


async def list_voices(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    style = getattr(request.app.state.settings, "voices_list_style", "seed")
    await runtime.state.voices.refresh()  # clones made on other instances (REDIS_URL)
    return JSONResponse([voice.listing(style) for voice in runtime.voices.listed()])


async def create_voice(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    runtime: Runtime = request.app.state.runtime
    limit = int(settings.max_voice_file_size_mb * 1_000_000)
    too_big = f"the file is over the {settings.max_voice_file_size_mb:g} MB limit (MAX_VOICE_FILE_SIZE_MB)"
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return _error(415, "send the audio as multipart/form-data with a 'file' field")
    declared = request.headers.get("content-length")
    if declared is None:
        return _error(411, "Content-Length is required (the upload size must be known before it is read)")
    try:
        length = int(declared)
    except ValueError:
        return _error(400, "Content-Length is not a number")
    if length > limit + MULTIPART_OVERHEAD:
        return _error(413, too_big)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit + MULTIPART_OVERHEAD:
            return _error(413, too_big)

    async def replay() -> dict[str, object]:
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except Exception as exc:  # starlette's MultiPartException and friends
        return _error(400, f"malformed multipart body: {exc}")
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return _error(422, "the multipart field 'file' (the audio sample) is missing")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > limit:
        return _error(413, too_big)
    try:
        audio, rate = await runtime.speech_pool.run(decode_audio, data)
        entry = await runtime.cloner.clone(audio, rate)
    except UnsupportedAudio as exc:
        return _error(415, str(exc))
    except UnusableAudio as exc:
        return _error(422, str(exc))
    except ProviderError as exc:  # cloud cloning: the provider refused or failed (the message names no key)
        log.error("voice cloning failed: %s", exc)
        return _error(503 if exc.retryable else 502, f"voice cloning failed: {exc}")
    await runtime.state.voices.publish(entry)  # with REDIS_URL: usable at once on every instance
    log.info("voice %s cloned from a %d-byte upload", entry.name, len(data))
    return JSONResponse({"name": entry.name})
