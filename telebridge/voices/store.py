"""The voice store: named voices a session or an agent can ask for, from a voices file and from cloning.

* The **voices file** (YAML or JSON, ``TELEBRIDGE_VOICES_FILE``) maps names to TTS configurations::

      default:
        language: en
        gender: male
        tts: {provider: piper}                     # the bundled voice
      narrator:
        language: en
        gender: female
        good: true                                 # only good voices are listed by GET /v1/voices
        comment: internal note, never returned
        tts: {provider: piper, model: /voices/en_US-amy-medium.onnx, length_scale: 1.1}
      bella:
        tts: {provider: elevenlabs, voice: {id: EXAVITQu4vr4xnSDxMaL, name: Bella, category: premade}}
      sonic:
        tts: {provider: cartesia, voice: a0e99841-438c-4a64-b679-ae501e7d6091}

  ``tts`` is any TTS provider's configuration (the ``SessionConfig`` union). Relative Piper ``model`` paths are
  resolved against the file's folder; an ElevenLabs ``voice`` may be just its id (or omit ``name``/``category``).
  API keys are best left out: cloud voices read them from the provider's environment variable when used.
  Without a file the store holds one voice, ``default`` (the bundled Piper voice).
* **Cloned voices** are written by ``POST /v1/voices``, one JSON file per voice in ``TELEBRIDGE_VOICE_STORE_DIR``
  (default ``$XDG_DATA_HOME/telebridge/voices``): the derived settings and the measurements only, never the
  uploaded audio, never an API key. A cloud clone (ElevenLabs, Cartesia) stores the provider's voice id. They
  are re-read on a miss, so a voice cloned through one process is usable at once by every process sharing the
  directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from telebridge.config.tts import PiperTTS
from telebridge.session import TTSConfig

log = logging.getLogger("telebridge.voices")

CLONED_PREFIX = "cloned_voice_"
VOICE_PATH_PREFIX = "voices/"
CLONED_NAME = re.compile(r"^cloned_voice_[A-Za-z0-9]{6,32}$")
_TTS_ADAPTER: TypeAdapter[Any] = TypeAdapter(TTSConfig)
# Never written to a clone's file: a cloud voice reads its key from the environment when it is used.
SECRETS: dict[str, Any] = {"tts": {"api_key", "credentials"}}


class VoiceFileError(ValueError):
    """The voices file cannot be read or does not describe voices; the message says where and why."""


class UnknownVoice(KeyError):
    """No voice of that name in the store."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        shown = ", ".join(self.known[:10]) + (", …" if len(self.known) > 10 else "")
        return f"unknown voice {self.name!r}; known voices: {shown or 'none'}"


class VoiceEntry(BaseModel):
    """One voice. ``name``/``language``/``gender`` are public; everything else stays inside the server."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    language: str = "en"
    gender: Literal["male", "female", "neutral"] = "neutral"
    good: bool = True
    comment: str | None = None
    tts: TTSConfig = Field(default_factory=PiperTTS)
    cloned: bool = False
    created_at: str | None = None
    clone_info: dict[str, Any] | None = Field(
        None, description="How a cloned voice was derived: measurements of the sample and of the base voice."
    )

    def public(self) -> dict[str, str]:
        """The seed's shape of this voice (nothing internal)."""
        return {"name": self.name, "language": self.language, "gender": self.gender}

    @property
    def path_on_server(self) -> str:
        """The id Unmute's clients send as the session voice (Unmute names voices by their sample's path)."""
        return VOICE_PATH_PREFIX + self.name

    def listing(self, style: str = "seed") -> dict[str, Any]:
        """What ``GET /v1/voices`` returns for this voice: the seed's fields plus Unmute's ``source``; or
        (``style="unmute"``) exactly Unmute's ``VoiceSample`` fields, which its Python client parses with
        ``extra="forbid"``."""
        source = {"source_type": "file", "path_on_server": self.path_on_server}
        if style == "unmute":
            return {"name": self.name, "good": True, "instructions": None, "source": source}
        return {**self.public(), "source": source}


def new_cloned_name() -> str:
    """``cloned_voice_`` + 12 random letters and digits (unguessable, safe as a file name)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return CLONED_PREFIX + "".join(secrets.choice(alphabet) for _ in range(12))


def _parse_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VoiceFileError(f"cannot read voices file {path}: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise VoiceFileError(f"voices file {path}: line {exc.lineno}: {exc.msg}") from exc
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - PyYAML comes with the local extra's dependencies
        raise VoiceFileError(f"voices file {path} is YAML but PyYAML is not installed (pip install pyyaml)") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise VoiceFileError(f"voices file {path}: {exc}") from exc


def load_voices_file(path: Path) -> dict[str, VoiceEntry]:
    """Read and validate a voices file (a mapping of names to voices); raises :class:`VoiceFileError`."""
    data = _parse_file(path)
    if not isinstance(data, dict):
        raise VoiceFileError(f"voices file {path} must map voice names to voices, got {type(data).__name__}")
    voices: dict[str, VoiceEntry] = {}
    for name, body in data.items():
        body = dict(body or {})
        if str(name).startswith(CLONED_PREFIX):
            raise VoiceFileError(f"voices file {path}: {name!r}: names starting {CLONED_PREFIX!r} are for clones")
        tts = body.get("tts")
        if isinstance(tts, dict) and tts.get("provider", "piper") == "piper" and tts.get("model"):
            model = Path(str(tts["model"])).expanduser()
            body["tts"] = {**tts, "model": str(model if model.is_absolute() else (path.parent / model).resolve())}
        elif isinstance(tts, dict) and tts.get("provider") == "elevenlabs" and tts.get("voice") is not None:
            voice = tts["voice"]
            voice = {"id": voice} if isinstance(voice, str) else dict(voice) if isinstance(voice, dict) else voice
            if isinstance(voice, dict):
                voice.setdefault("name", str(name))
                voice.setdefault("category", "premade")
            body["tts"] = {**tts, "voice": voice}
        try:
            voices[str(name)] = VoiceEntry.model_validate({**body, "name": str(name), "cloned": False})
        except ValidationError as exc:
            raise VoiceFileError(f"voices file {path}: voice {name!r}: {exc}") from exc
    return voices


class VoiceStore:
    """Named voices: the voices file's, then the cloned ones. Thread-safe; lookups never touch the disk on a hit."""

    def __init__(self, voices_file: Path | None, clone_dir: Path) -> None:
        self.voices_file = voices_file
        self.clone_dir = Path(clone_dir)
        self._lock = threading.Lock()
        if voices_file is not None:
            self._file_voices = load_voices_file(Path(voices_file))
        else:
            self._file_voices = {"default": VoiceEntry(name="default", language="en", gender="male")}
        self._cloned: dict[str, VoiceEntry] = {}
        self._scan_clones()

    # --- reading --------------------------------------------------------------------------------------------
    def _scan_clones(self) -> None:
        if not self.clone_dir.is_dir():
            return
        for path in sorted(self.clone_dir.glob(f"{CLONED_PREFIX}*.json")):
            if path.stem not in self._cloned:
                entry = self._read_clone(path)
                if entry is not None:
                    self._cloned[entry.name] = entry

    def _read_clone(self, path: Path) -> VoiceEntry | None:
        try:
            entry = VoiceEntry.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            log.warning("ignoring unreadable cloned voice %s: %s", path.name, exc)
            return None
        if entry.name != path.stem or not entry.cloned:
            log.warning("ignoring cloned voice file %s: its content names %r", path.name, entry.name)
            return None
        return entry

    def get(self, name: str) -> VoiceEntry | None:
        """The voice called ``name``, or None. A clone written by another process is picked up here."""
        entry = self._file_voices.get(name)
        if entry is not None:
            return entry
        with self._lock:
            entry = self._cloned.get(name)
            if entry is None and CLONED_NAME.match(name):
                path = self.clone_dir / f"{name}.json"
                if path.is_file():
                    entry = self._read_clone(path)
                    if entry is not None:
                        self._cloned[name] = entry
            return entry

    def require(self, name: str) -> VoiceEntry:
        entry = self.get(name)
        if entry is None:
            raise UnknownVoice(name, self.names())
        return entry

    def is_listed(self, name: str) -> bool:
        """Whether ``name`` is one of the voices ``GET /v1/voices`` lists (the ones sessions may choose)."""
        entry = self.get(name)
        return entry is not None and entry.good

    def resolve(self, voice: str) -> str | None:
        """The listed voice a session asked for, by name or by ``path_on_server`` (None if there is none)."""
        if self.is_listed(voice):
            return voice
        if voice.startswith(VOICE_PATH_PREFIX) and self.is_listed(voice[len(VOICE_PATH_PREFIX) :]):
            return voice[len(VOICE_PATH_PREFIX) :]
        return None

    def names(self) -> list[str]:
        return [v.name for v in self.listed()]

    def listed(self) -> list[VoiceEntry]:
        """Good voices, the file's first (in file order), then clones (oldest first)."""
        with self._lock:
            self._scan_clones()
            cloned = sorted(self._cloned.values(), key=lambda v: (v.created_at or "", v.name))
        return [v for v in self._file_voices.values() if v.good] + [v for v in cloned if v.good]

    def all_voices(self) -> list[VoiceEntry]:
        with self._lock:
            return list(self._file_voices.values()) + list(self._cloned.values())

    def tts_for(self, name: str) -> Any:
        """The TTS configuration of voice ``name`` (raises :class:`UnknownVoice`)."""
        return self.require(name).tts

    # --- writing --------------------------------------------------------------------------------------------
    def add_clone(self, entry: VoiceEntry) -> VoiceEntry:
        """Persist a cloned voice (atomically: a reader never sees half a file) and make it usable at once."""
        if not CLONED_NAME.match(entry.name):
            raise ValueError(f"cloned voice names look like {CLONED_PREFIX}<letters/digits>; got {entry.name!r}")
        entry = entry.model_copy(update={
            "cloned": True,
            "created_at": entry.created_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        self.clone_dir.mkdir(parents=True, exist_ok=True)
        final = self.clone_dir / f"{entry.name}.json"
        tmp = final.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(entry.model_dump_json(indent=2, exclude=SECRETS), encoding="utf-8")
        os.replace(tmp, final)
        with self._lock:
            self._cloned[entry.name] = entry
        return entry

    def adopt(self, entry: VoiceEntry) -> None:
        """Make a clone another instance stored usable here (memory only: it lives in the shared store, see
        :mod:`telebridge.state.voices`). A voices-file name is never replaced."""
        if entry.cloned and CLONED_NAME.match(entry.name) and entry.name not in self._file_voices:
            with self._lock:
                self._cloned[entry.name] = entry

    def writable(self) -> bool:
        """Whether clones can be stored (the directory exists and is writable, or can be created)."""
        probe = self.clone_dir
        while not probe.exists():
            if probe.parent == probe:
                return False
            probe = probe.parent
        return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)

    def piper_voices(self) -> list[VoiceEntry]:
        """The voices file's Piper voices (the bundled one included): what a Piper clone may be derived from."""
        found = [v for v in self._file_voices.values() if isinstance(v.tts, PiperTTS) and v.tts.voice is None]
        return found or [VoiceEntry(name="default", language="en", gender="male")]
