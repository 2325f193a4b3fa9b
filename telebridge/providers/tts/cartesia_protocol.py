"""Cartesia's WebSocket TTS protocol without any I/O: the request messages for a config and the server's messages
parsed into :class:`Event` s. The socket shell, and why the protocol is used this way, is
:mod:`telebridge.providers.tts.cartesia`.

* Requests (``Cartesia-Version: 2024-11-13``): a generation is ``{model_id, transcript, voice, output_format,
  language, context_id, continue[, flush]}``; the voice is ``{mode: id, id}`` or ``{mode: embedding, embedding}``
  with Jay's ``speed``/``emotion`` as ``__experimental_controls``. ``cancel`` is ``{context_id, cancel: true}``.
* Server messages: ``chunk`` (base64 ``data``), ``flush_done`` (``flush_id``), ``done``, ``error``
  (``error``, ``status_code``), and others (timestamps…) that carry nothing we use.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from dataclasses import dataclass
from typing import Any

from telebridge.providers.context import PHONE_RATE
from telebridge.providers.errors import ProviderError, http_error, provider_error
from telebridge.providers.tts.decoding import RawDecoder

__all__ = ["CartesiaProtocol", "Event", "PROVIDER", "ENV_VAR", "API_VERSION"]

PROVIDER = "cartesia"
ENV_VAR = "CARTESIA_API_KEY"
API_VERSION = "2024-11-13"

_err = functools.partial(provider_error, PROVIDER)


@dataclass
class Event:
    """One server message: ``chunk``, ``flush_done``, ``done``, ``error``, ``other`` (timestamps…), or the local
    ``closed`` (the socket died; ``failure`` says how)."""

    kind: str
    context_id: str | None = None
    audio: bytes = b""
    flush_id: int | None = None
    error: str = ""
    status: int = 0
    failure: ProviderError | None = None


class CartesiaProtocol:
    """Sans-I/O: builds the request messages for a config and parses the server's messages."""

    def __init__(self, cfg: Any, *, phone: bool) -> None:
        self.model = cfg.model
        self.language = cfg.language
        if phone:
            self.encoding, self.sample_rate = "pcm_mulaw", PHONE_RATE
        else:
            self.encoding, self.sample_rate = cfg.encoding, int(cfg.sample_rate)
        voice: dict[str, Any]
        if isinstance(cfg.voice, list):
            voice = {"mode": "embedding", "embedding": [float(x) for x in cfg.voice]}
        else:
            voice = {"mode": "id", "id": cfg.voice}
        controls: dict[str, Any] = {}
        if cfg.speed is not None:
            controls["speed"] = cfg.speed
        if cfg.emotion:
            controls["emotion"] = list(cfg.emotion)
        if controls:
            voice["__experimental_controls"] = controls
        self.voice = voice

    @property
    def output_format(self) -> dict[str, Any]:
        return {"container": "raw", "encoding": self.encoding, "sample_rate": self.sample_rate}

    def request(self, transcript: str) -> dict[str, Any]:
        """The generation fields (the body of ``POST /tts/bytes``; repeated unchanged on every context input)."""
        return {"model_id": self.model, "transcript": transcript, "voice": self.voice,
                "output_format": self.output_format, "language": self.language}

    def generation(self, context_id: str, transcript: str, *, cont: bool, flush: bool = False) -> str:
        msg = self.request(transcript) | {"context_id": context_id, "continue": cont}
        if flush:
            msg["flush"] = True
        return json.dumps(msg)

    @staticmethod
    def cancel(context_id: str) -> str:
        return json.dumps({"context_id": context_id, "cancel": True})

    @staticmethod
    def parse(raw: str | bytes) -> Event:
        """A server message; :class:`ProviderError` (kind ``protocol``) if it is not a well-formed one."""
        if not isinstance(raw, str):
            raise _err("unexpected binary frame", "protocol")
        try:
            msg = json.loads(raw)
        except ValueError:
            raise _err("malformed message (not JSON)", "protocol") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise _err("malformed message (no type)", "protocol")
        kind, ctx = msg["type"], msg.get("context_id")
        ctx = ctx if isinstance(ctx, str) and ctx else None
        flush_id = msg.get("flush_id") if isinstance(msg.get("flush_id"), int) else None
        if kind == "chunk":
            data = msg.get("data")
            try:
                audio = base64.b64decode(data, validate=True) if isinstance(data, str) else None
            except (binascii.Error, ValueError):
                audio = None
            if audio is None:
                raise _err("malformed chunk (audio is not base64)", "protocol")
            return Event("chunk", ctx, audio=audio, flush_id=flush_id)
        if kind in ("flush_done", "done"):
            return Event(kind, ctx, flush_id=flush_id)
        if kind == "error":
            status = msg.get("status_code")
            return Event("error", ctx, error=str(msg.get("error") or "error"),
                         status=status if isinstance(status, int) else 0)
        return Event("other", ctx)

    def error(self, event: Event) -> ProviderError:
        if event.status in (401, 403) or event.status == 429 or event.status >= 500:
            return http_error(PROVIDER, event.status, event.error, env_var=ENV_VAR)
        return _err(f"error {event.status or ''}: {event.error[:200]}".replace("  ", " "), "protocol",
                    status=event.status or None)

    def decoder(self) -> RawDecoder:
        """One sentence's audio bytes → int16 (16-bit PCM may split a sample across chunks)."""
        return RawDecoder("mulaw" if self.encoding == "pcm_mulaw" else "pcm")
