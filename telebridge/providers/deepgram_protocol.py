"""Deepgram's wire protocol without any I/O: query strings, client messages, server events and the word log of a
live transcription. Shared by the STT (``/v1/listen``) and TTS (``/v1/speak``)
clients, which add the sockets.

Documented facts this module encodes:

* Auth: header ``Authorization: Token <key>`` on every REST request and on the WebSocket upgrade; a refused key
  is HTTP 401 (on the upgrade too) with ``{"err_code": "INVALID_AUTH", "err_msg": ..., "request_id": ...}``.
* Live STT: audio as binary frames; text frames ``KeepAlive`` / ``Finalize`` / ``CloseStream``; server frames
  ``Results`` (``channel.alternatives[0].words[*].start/end`` in seconds of audio received on *this* socket,
  ``is_final``, ``speech_final``, ``from_finalize``), ``Metadata``, ``SpeechStarted``, ``UtteranceEnd``. Close
  frames: 1011 ``NET-0001`` (no audio nor KeepAlive for ~10 s), 1011 ``NET-0000``, 1008/1002 ``DATA-0000``.
* Keywords: ``keywords=word:intensifier`` for Nova-2 and older; Nova-3 (and Flux) take ``keyterm=term`` instead
  (no intensifiers).
* TTS: ``Speak`` / ``Flush`` (answered ``Flushed`` + ``sequence_id``) / ``Clear`` (answered ``Cleared``) /
  ``Close``; audio arrives as binary frames; ``Metadata``, ``Warning`` (``warn_code``/``warn_msg``) and
  ``Error`` frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from telebridge.providers.context import ws_origin

__all__ = [
    "PROVIDER", "ENV_VAR", "DEFAULT_ORIGIN", "LISTEN_PATH", "SPEAK_PATH", "CHECK_PATH",
    "auth_headers", "listen_params", "listen_url", "prerecorded_params", "parse_prerecorded", "speak_params",
    "speak_url", "uses_keyterm",
    "control", "Word", "ListenEvent", "parse_listen", "SpeakEvent", "parse_speak", "WordLog", "ClockMap",
    "close_reason", "join_words", "RAW_TTS_ENCODINGS",
]

PROVIDER = "deepgram"
ENV_VAR = "DEEPGRAM_API_KEY"
DEFAULT_ORIGIN = "https://api.deepgram.com"
LISTEN_PATH = "/v1/listen"
SPEAK_PATH = "/v1/speak"
CHECK_PATH = "/v1/projects"
RAW_TTS_ENCODINGS = ("linear16", "mulaw", "alaw")


def auth_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Token {key}"}


def _b(value: bool) -> str:
    return "true" if value else "false"


def uses_keyterm(model: str) -> bool:
    """Nova-3 and Flux models take ``keyterm`` (Keyterm Prompting); older ones take ``keywords``."""
    m = model.lower()
    return m.startswith("nova-3") or m.startswith("flux")


def _keyword_params(cfg: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for word, intensifier in cfg.keywords:
        if uses_keyterm(cfg.model):
            out.append(("keyterm", word))  # Keyterm Prompting has no intensifier
        else:
            out.append(("keywords", f"{word}:{intensifier:g}"))
    return out


def _text_params(cfg: Any) -> list[tuple[str, str]]:
    """The transcription options live and pre-recorded requests share."""
    return [
        ("model", cfg.model),
        ("language", cfg.language),
        ("punctuate", _b(cfg.punctuate)),
        ("smart_format", _b(cfg.smart_format)),
        ("filler_words", _b(cfg.filler_words)),
        ("profanity_filter", _b(cfg.profanity_filter)),
        *_keyword_params(cfg),
    ]


def listen_params(cfg: Any, *, encoding: str, sample_rate: int) -> list[tuple[str, str]]:
    """Query of the live ``/v1/listen`` socket: every Jay field, plus the audio format actually sent."""
    return [
        *_text_params(cfg),
        ("encoding", encoding),
        ("sample_rate", str(sample_rate)),
        ("channels", "1"),
        ("interim_results", _b(cfg.interim_results)),
        ("no_delay", _b(cfg.no_delay)),
        # endpointing=0 would not mean "no delay" but "never": Deepgram documents false to disable it.
        ("endpointing", str(cfg.endpointing_ms) if cfg.endpointing_ms > 0 else "false"),
    ]


def listen_url(origin: str, cfg: Any, *, encoding: str, sample_rate: int) -> str:
    """The live ``/v1/listen`` socket's URL at ``origin`` (``http(s)://``)."""
    return ws_origin(origin) + LISTEN_PATH + "?" + urlencode(listen_params(cfg, encoding=encoding,
                                                                          sample_rate=sample_rate))


def prerecorded_params(cfg: Any) -> list[tuple[str, str]]:
    """Query of ``POST /v1/listen`` (a WAV body describes its own format)."""
    return _text_params(cfg)


def speak_params(model: str, encoding: str, sample_rate: int, *, rest: bool = False) -> list[tuple[str, str]]:
    params = [("model", model), ("encoding", encoding)]
    if encoding in RAW_TTS_ENCODINGS or encoding == "flac":
        params.append(("sample_rate", str(sample_rate)))
    if rest and encoding in RAW_TTS_ENCODINGS:
        params.append(("container", "none"))  # raw samples, no WAV header
    return params


def speak_url(origin: str, model: str, encoding: str, sample_rate: int) -> str:
    """The ``/v1/speak`` socket's URL at ``origin`` (``http(s)://``)."""
    return ws_origin(origin) + SPEAK_PATH + "?" + urlencode(speak_params(model, encoding, sample_rate))


def parse_prerecorded(data: Any) -> str:
    """The transcript in a ``POST /v1/listen`` answer (``ValueError``, ``KeyError``, ``IndexError`` or ``TypeError``
    when it has none)."""
    best = data["results"]["channels"][0]["alternatives"][0]
    return str(best.get("transcript") or "").strip()


def control(kind: str, **fields: Any) -> str:
    """A client control message (``KeepAlive``, ``Finalize``, ``CloseStream``, ``Speak``, ``Flush``, ...)."""
    return json.dumps({"type": kind, **fields})


# --- live STT events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float

    @property
    def mid(self) -> float:
        return 0.5 * (self.start + self.end)


@dataclass(frozen=True)
class ListenEvent:
    type: str
    words: tuple[Word, ...] = ()
    transcript: str = ""
    start: float = 0.0
    duration: float = 0.0
    is_final: bool = False
    speech_final: bool = False
    from_finalize: bool = False
    raw: dict[str, Any] | None = None


def parse_listen(text: str) -> ListenEvent:
    """One server text frame of ``/v1/listen``. Raises ``ValueError`` when it is not Deepgram's JSON."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError("not a Deepgram event")
    kind = data["type"]
    if kind != "Results":
        return ListenEvent(type=kind, raw=data)
    alternatives = (data.get("channel") or {}).get("alternatives") or [{}]
    best = alternatives[0] or {}
    words = tuple(
        Word(str(w.get("punctuated_word") or w["word"]), float(w["start"]), float(w["end"]))
        for w in best.get("words") or []
    )
    return ListenEvent(
        type=kind, words=words, transcript=str(best.get("transcript") or ""), start=float(data.get("start", 0.0)),
        duration=float(data.get("duration", 0.0)), is_final=bool(data.get("is_final")),
        speech_final=bool(data.get("speech_final")), from_finalize=bool(data.get("from_finalize")), raw=data,
    )


def close_reason(code: int | None, reason: str | None) -> tuple[str, str]:
    """(health kind, detail) for a close frame from ``/v1/listen`` or ``/v1/speak``."""
    detail = f"socket closed ({code}{' ' + reason if reason else ''})"
    if reason and "NET-0001" in reason:
        return "timeout", detail
    if reason and "DATA-" in reason:
        return "protocol", detail
    return "disconnected", detail


# --- TTS events -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeakEvent:
    type: str
    sequence_id: int | None = None
    message: str = ""


def parse_speak(text: str) -> SpeakEvent:
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError("not a Deepgram event")
    kind = data["type"]
    message = str(data.get("warn_msg") or data.get("err_msg") or data.get("description") or "")
    seq = data.get("sequence_id")
    return SpeakEvent(kind, int(seq) if isinstance(seq, (int, float)) else None, message)


# --- call clock and word log -----------------------------------------------------------------------------------


class ClockMap:
    """Socket seconds → call-clock seconds. Each socket starts at 0; audio the client had to drop leaves a gap in
    the call clock that the socket never saw, so the map is piecewise: ``(socket_t, call_t)`` breakpoints."""

    def __init__(self, call_start: float = 0.0) -> None:
        self._points: list[tuple[float, float]] = [(0.0, call_start)]

    def reset(self, call_start: float) -> None:
        self._points = [(0.0, call_start)]

    def expect(self, socket_t: float, call_t: float) -> None:
        """Audio for ``call_t`` is about to be sent at ``socket_t``; add a breakpoint when that is a jump."""
        if abs(self.to_call(socket_t) - call_t) > 0.01:
            self._points.append((socket_t, call_t))
            del self._points[:-64]

    def to_call(self, socket_t: float) -> float:
        for s, c in reversed(self._points):
            if socket_t >= s - 1e-9:
                return c + (socket_t - s)
        s, c = self._points[0]
        return c + (socket_t - s)


class WordLog:
    """Final and interim words of one call, on the call clock."""

    MAX_FINAL = 4000

    def __init__(self) -> None:
        self.final: list[Word] = []
        self.interim: list[Word] = []
        self.horizon = float("-inf")  # finals with a midpoint before this are already known (replayed audio)

    def apply(self, event: ListenEvent, clock: ClockMap) -> None:
        words = [Word(w.text, clock.to_call(w.start), clock.to_call(w.end)) for w in event.words]
        if event.is_final:
            words = [w for w in words if w.mid > self.horizon]
            self.final.extend(words)
            if len(self.final) > self.MAX_FINAL:
                del self.final[: len(self.final) - self.MAX_FINAL]
            self.interim = []
        else:
            self.interim = [w for w in words if w.mid > self.horizon]

    def last_final_end(self) -> float:
        return self.final[-1].end if self.final else 0.0

    def replayed_from(self) -> None:
        """The socket was replaced and the audio after the last final word is sent again: finals up to that word's
        end are not taken twice, and interim words will come again."""
        if self.final:
            self.horizon = max(self.horizon, self.final[-1].end - 1e-3)
        self.interim = []

    def words(self, start: float, end: float | None, *, interim: bool = True, slack: float = 0.0) -> list[Word]:
        hi = float("inf") if end is None else end + slack
        lo = start - slack
        pool = self.final + (self.interim if interim else [])
        return sorted((w for w in pool if lo <= w.mid <= hi), key=lambda w: w.start)


def join_words(words: list[Word]) -> str:
    return " ".join(w.text for w in words).strip()
