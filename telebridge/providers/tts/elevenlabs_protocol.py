"""ElevenLabs' multi-context WebSocket TTS protocol without any I/O: the output format for a config, the socket's URL
and messages, parsing of what the server sends, and the errors its messages and close frames mean. The socket
shell, and why the protocol is used this way, is :mod:`telebridge.providers.tts.elevenlabs`.

Jay fields: ``voice.id`` → the URL's voice, ``voice.settings`` → ``voice_settings``, ``model`` → ``model_id``,
``encoding`` → ``output_format``, ``enable_ssml_parsing`` → the query flag, ``chunk_length_schedule`` →
``generation_config``. Phone calls ask for ``ulaw_8000`` (unless the agent set ``encoding``); otherwise the
default ``mp3_22050_32`` becomes ``pcm_22050`` (same rate, no decoder). An explicit mp3 is decoded with PyAV.
``voice_settings`` and ``generation_config`` go in the socket's first message only (the service rejects later
changes with 1008).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import quote, urlencode

from telebridge.providers.context import ProviderContext, ws_origin
from telebridge.providers.errors import ProviderAuthError, ProviderConfigError, ProviderError
from telebridge.providers.tts.decoding import Mp3StreamDecoder, RawDecoder

__all__ = ["PROVIDER", "ENV_VAR", "Protocol", "output_format", "format_rate", "decoder", "server_error",
           "close_error"]

PROVIDER = "elevenlabs"
ENV_VAR = "ELEVENLABS_API_KEY"
_AUTH_WORDS = ("api key", "api_key", "unauthorized", "authentication", "auth_error", "invalid_key")


def output_format(cfg: Any, ctx: ProviderContext) -> str:
    if ctx.wants_phone_format(cfg):
        return "ulaw_8000"
    if "encoding" in cfg.model_fields_set:
        return str(cfg.encoding)
    return f"pcm_{format_rate(cfg.encoding)}"


def format_rate(fmt: str) -> int:
    return int(fmt.split("_")[1])


def is_auth(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in _AUTH_WORDS)


class Protocol:
    """Sans-I/O: the multi-context socket's URL and messages, and parsing of what the server sends."""

    def __init__(self, cfg: Any, fmt: str) -> None:
        self.cfg = cfg
        self.fmt = fmt

    def url(self, origin: str) -> str:
        query = urlencode({"model_id": self.cfg.model, "output_format": self.fmt,
                           "enable_ssml_parsing": str(self.cfg.enable_ssml_parsing).lower(),
                           "inactivity_timeout": 180})
        return f"{ws_origin(origin)}/v1/text-to-speech/{quote(self.cfg.voice.id, safe='')}/multi-stream-input?{query}"

    def rest_url(self, origin: str) -> str:
        """``POST`` here for a whole sentence (``output_format`` goes in the query)."""
        return f"{origin}/v1/text-to-speech/{quote(self.cfg.voice.id, safe='')}/stream"

    def rest_body(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text, "model_id": self.cfg.model}
        settings = self.voice_settings()
        if settings is not None:
            body["voice_settings"] = settings
        return body

    def voice_settings(self) -> dict[str, Any] | None:
        settings = self.cfg.voice.settings
        return settings.model_dump() if settings is not None else None

    def open_context(self, cid: str, *, first_on_socket: bool) -> dict[str, Any]:
        msg: dict[str, Any] = {"text": " ", "context_id": cid}
        if first_on_socket:
            settings = self.voice_settings()
            if settings is not None:
                msg["voice_settings"] = settings
            msg["generation_config"] = {"chunk_length_schedule": list(self.cfg.chunk_length_schedule)}
        return msg

    @staticmethod
    def send_text(cid: str, text: str) -> dict[str, Any]:
        return {"text": text + " ", "context_id": cid, "flush": True}

    @staticmethod
    def close_context(cid: str) -> dict[str, Any]:
        return {"context_id": cid, "close_context": True}

    @staticmethod
    def close_socket() -> dict[str, Any]:
        return {"close_socket": True}

    @staticmethod
    def parse(raw: str | bytes) -> tuple[str, str | None, Any]:
        """→ ("audio", cid, (bytes, aligned_chars)) | ("final", cid, None) | ("error", cid, (message, code))."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            cid = data.get("contextId", data.get("context_id"))
            if data.get("error") or (data.get("message") and "audio" not in data):
                return "error", cid, (str(data.get("message") or data.get("error")), data.get("error"))
            if data.get("audio"):
                alignment = data.get("alignment") or {}
                chars = alignment.get("chars") or []
                return "audio", cid, (base64.b64decode(data["audio"], validate=True), len(chars))
            if data.get("isFinal") or data.get("is_final"):
                return "final", cid, None
            return "other", cid, None
        except (ValueError, TypeError, binascii.Error) as exc:
            raise ProviderError(PROVIDER, f"malformed message from the server: {exc}") from None


def decoder(fmt: str) -> RawDecoder | Mp3StreamDecoder:
    """One sentence's audio bytes (any output_format) → int16 mono at the format's rate, chunk by chunk."""
    kind, rate = fmt.split("_")[0], format_rate(fmt)
    if kind == "mp3":
        return Mp3StreamDecoder(PROVIDER, rate)
    if kind in ("pcm", "ulaw"):
        return RawDecoder("mulaw" if kind == "ulaw" else "pcm")
    raise ProviderConfigError(PROVIDER, f"output format {fmt!r} is not supported here")


def server_error(message: str, code: Any) -> ProviderError:
    """An error message from the server, as the exception its sentence (or the socket) fails with."""
    if is_auth(f"{message} {code}"):
        return ProviderAuthError(PROVIDER, ENV_VAR)
    return ProviderError(PROVIDER, f"server error: {message}"[:200],
                         retryable=code in ("max_active_conversations", "rate_limited"))


def close_error(code: int | None, reason: str) -> ProviderError:
    """The socket was closed (``code``, ``reason``): what every sentence still on it fails with."""
    if code == 1008 and is_auth(reason):
        return ProviderAuthError(PROVIDER, ENV_VAR, "credentials refused (WebSocket 1008)")
    detail = f"connection closed ({code}{': ' + reason[:120] if reason else ''})"
    return ProviderError(PROVIDER, detail, retryable=True)
