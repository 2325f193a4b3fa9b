"""Service settings, read from the environment and an optional ``.env`` file.

Every setting is listed in ``.env.example``. Secrets (the Twilio auth token, provider API keys) are only ever
read from the environment and are held as :class:`~pydantic.SecretStr`, so they never show up in a repr or a
log line.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("telebridge.settings")


def load_env_file(path: str | Path = ".env") -> None:
    """Export a ``.env`` file's non-empty values that the environment does not already set.

    ``Settings`` reads ``.env`` itself, but provider keys (``DEEPGRAM_API_KEY``, …) and ``OPENAI_BASE_URL`` are read
    from the process environment by the agent's config models and the openai SDK, so the command line exports
    them once at start. Empty values (as in ``.env.example``) are skipped: unset, not "".
    """
    import os

    from dotenv import dotenv_values

    if not Path(path).is_file():
        return
    for key, value in dotenv_values(path).items():
        if value and key not in os.environ:
            os.environ[key] = value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TELEBRIDGE_", env_file=".env", extra="ignore", env_ignore_empty=True)

    public_url: str | None = Field(
        default=None,
        description="The https:// base address Twilio reaches this service at (e.g. https://abc.ngrok.app). "
        "Used to build the Media Streams wss:// URL and to validate signatures behind proxies.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    agent: str | None = Field(default=None, description="path/to/agent.py or package.module:attr")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        default="text", description="'json': one JSON object per line (timestamp, level, logger, message, call_sid "
        "on call lines), numbers masked and secrets redacted as in text logs.",
    )
    otel_traces: bool = Field(
        default=False, description="OpenTelemetry traces (conversation -> turn -> endpointing/stt/llm/tts spans) "
        "to the OTLP/HTTP collector named by the standard OTEL_EXPORTER_OTLP_* variables; needs the 'otel' extra.",
    )

    twilio_account_sid: str | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_ACCOUNT_SID", "TELEBRIDGE_TWILIO_ACCOUNT_SID")
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_AUTH_TOKEN", "TELEBRIDGE_TWILIO_AUTH_TOKEN")
    )
    validate_signatures: bool | None = Field(
        default=None,
        description="Validate X-Twilio-Signature on webhooks and the WebSocket upgrade. Defaults to on whenever "
        "an auth token is set; turning it off must be explicit and is logged as a warning.",
    )

    max_calls: int = Field(default=50, ge=1, description="Concurrent calls per worker process (each worker of "
                           "`serve --workers N` has its own cap); more are refused politely (TwiML 'lines are busy').")
    speech_workers: int = Field(default=2, ge=1, le=32, description="Threads for STT/TTS inference.")
    outbound_chunk_ms: int = Field(default=80, ge=20, le=500, description="Agent audio per media message.")
    outbound_lead_ms: int = Field(default=120, ge=0, le=2000, description="How far ahead of playback we send.")
    drain_timeout: float = Field(default=30.0, ge=0, description="On SIGTERM, seconds live calls may finish.")
    vad_rest_ticks: int = Field(
        default=4, ge=1, le=4, description="A call at rest (nobody speaks, no reply on its way, nothing due) has its "
        "VAD windows taken every this many 32 ms ticks, a few at a time: less CPU per quiet line, the caller's first "
        "word noticed up to (n - 1) x 32 ms later. 1: every tick.",
    )
    preload_local: bool = Field(
        default=True, description="Load the embedded Whisper and Piper at start-up, so the first call that uses them "
        "does not wait for them. Off for agents on cloud speech: a worker starts ~2 s faster and holds ~310 MB less; a call "
        "that does use them (a fallback, say) loads them then.",
    )
    # --- scaling out (issue 11): worker processes, shared state on Redis ---
    workers: int | None = Field(
        default=None, ge=1, le=256, description="Worker processes for `telebridge serve` sharing its port. Default: "
        "one per core when REDIS_URL is set, else 1 (more than one needs REDIS_URL).",
    )
    redis_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "TELEBRIDGE_REDIS_URL"),
        description="redis://[user:password@]host:port/db (or rediss://): voices, calls, campaign dial pacing, the "
        "recordings index, session tokens and the limits shared by every worker and instance. Unset: per process.",
    )
    redis_prefix: str = Field(default="telebridge", min_length=1, max_length=64,
                              description="Key prefix in Redis: deployments sharing one Redis use different ones.")
    instance_id: str | None = Field(
        default=None, max_length=128, description="This process's name in call records and the recordings index; "
        "default <hostname>:<pid>.",
    )
    call_record_ttl: int = Field(default=7 * 86400, ge=60, description="Seconds a call's record is kept in Redis.")
    twilio_api_key_sid: str | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_API_KEY", "TWILIO_API_KEY_SID", "TELEBRIDGE_TWILIO_API_KEY_SID"),
        description="A Twilio API key SID (SK…), used with its secret instead of the auth token for REST calls.",
    )
    twilio_api_key_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TWILIO_API_SECRET", "TWILIO_API_KEY_SECRET", "TELEBRIDGE_TWILIO_API_KEY_SECRET"),
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Bearer key for the service's own API; one of the API keys (see api_keys). With no key at all, "
        "/v1/calls is off (404).",
    )
    twilio_api_base_url: str | None = Field(
        default=None, description="Override Twilio's REST base URL (tests point it at a local fake)."
    )

    # --- access control (issue 12): keys, session tokens, proxies, origins, limits ---
    api_keys: SecretStr | None = Field(
        default=None, description="Comma-separated API keys for /v1/realtime, POST /v1/voices, /v1/calls, /console, "
        "/metrics (TELEBRIDGE_API_KEY counts as one more). None set: those answer loopback clients only.",
    )
    protect_reads: bool = Field(default=False, description="Also require a key for GET /v1/voices and /v1/health.")
    trusted_proxies: str = Field(
        default="127.0.0.1,::1", description="Addresses/CIDRs whose X-Forwarded-For/-Proto are believed (uvicorn's "
        "forwarded_allow_ips). Empty: none. '*' trusts everyone (forgeable; warned at start-up).",
    )
    allowed_origins: str = Field(
        default="", description="Comma-separated extra Origins allowed for browser WebSockets and uploads (same-origin "
        "and loopback pages always are); '*' allows any.",
    )
    session_token_ttl: int = Field(default=60, ge=1, le=3600, description="Seconds a realtime session token lives.")
    max_realtime_sessions_per_key: int = Field(default=25, ge=0, description="Concurrent /v1/realtime sessions per "
                                               "API key (tokens count for the key that minted them); 0 = no limit.")
    max_realtime_sessions_per_client: int = Field(default=5, ge=0, description="... per client address; 0 = none.")
    max_realtime_session_seconds: float = Field(default=3600, ge=0, description="Longest realtime session; 0 = none.")
    max_uploads_per_hour_per_key: int = Field(default=100, ge=0, description="POST /v1/voices per key per hour.")
    max_uploads_per_hour_per_client: int = Field(default=30, ge=0, description="POST /v1/voices per address per hour.")
    max_request_body_kb: int = Field(default=1024, ge=1, description="Largest request body, except voice uploads.")

    # --- the console (/console, issue 9) ---
    console_token: SecretStr | None = Field(
        default=None, description="Opens /console (and /metrics) as Authorization: Bearer <token> or in the page's "
        "login form (then an HttpOnly session cookie); API keys do too. Neither set: loopback clients only.",
    )
    console_session_hours: float = Field(default=12.0, gt=0, le=24 * 30,
                                         description="How long a console login (its session cookie) lasts.")
    console_history: int = Field(default=200, ge=1, le=10_000,
                                 description="Finished calls the console keeps in memory (past calls list).")

    # --- realtime API, voices, recording (issue 4) ---
    voices_file: Path | None = Field(
        default=None, description="YAML or JSON file mapping voice names to TTS configurations (GET /v1/voices)."
    )
    voice_store_dir: Path = Field(
        default_factory=lambda: Settings.default_voice_store_dir(),
        description="Directory where cloned voices are persisted (one JSON file each); defaults to "
        "$XDG_DATA_HOME/telebridge/voices (~/.local/share/telebridge/voices).",
    )
    max_voice_file_size_mb: float = Field(
        default=4.0,
        gt=0,
        validation_alias=AliasChoices("MAX_VOICE_FILE_SIZE_MB", "TELEBRIDGE_MAX_VOICE_FILE_SIZE_MB"),
        description="Largest accepted voice-cloning upload (POST /v1/voices), in MB (10^6 bytes).",
    )
    recordings_dir: Path | None = Field(
        default=None, description="Where conversations that consent are recorded (JSON Lines); unset = never record."
    )
    realtime_chunk_ms: int = Field(default=40, ge=10, le=500, description="Agent audio per response.audio.delta.")
    realtime_lead_ms: int = Field(default=300, ge=0, le=5000, description="How far ahead of real time audio is sent.")
    voices_list_style: Literal["seed", "unmute"] = Field(
        default="seed", description="GET /v1/voices entries: 'seed' = name, language, gender + Unmute's source; "
        "'unmute' = exactly Unmute's VoiceSample (name, good, instructions, source), for Unmute's Python client, "
        "which rejects any other field.",
    )

    # --- cloud speech providers: origins replacing the public ones (self-hosted, regional, proxies, tests) ---
    deepgram_base_url: str | None = Field(default=None, description="e.g. https://api.deepgram.com")
    elevenlabs_base_url: str | None = Field(default=None, description="e.g. https://api.elevenlabs.io")
    cartesia_base_url: str | None = Field(default=None, description="e.g. https://api.cartesia.ai")
    fishaudio_base_url: str | None = Field(default=None, description="e.g. https://api.fish.audio")
    azure_speech_base_url: str | None = Field(
        default=None, description="Replaces https://<region>.stt.speech.microsoft.com and "
        "https://<region>.tts.speech.microsoft.com (and the token endpoint)."
    )
    google_tts_base_url: str | None = Field(default=None, description="e.g. https://texttospeech.googleapis.com")

    voice_cloning_provider: Literal["piper", "elevenlabs", "cartesia"] = Field(
        default="piper", description="Who clones voices uploaded to POST /v1/voices: the local Piper approximation, "
        "or ElevenLabs / Cartesia (real cloning; keys from ELEVENLABS_API_KEY / CARTESIA_API_KEY).",
    )

    @staticmethod
    def default_voice_store_dir() -> Path:
        """``$XDG_DATA_HOME/telebridge/voices``, else ``~/.local/share/telebridge/voices`` (never the cwd)."""
        import os

        base = os.environ.get("XDG_DATA_HOME", "").strip()
        root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
        return root / "telebridge" / "voices"

    @field_validator("deepgram_base_url", "elevenlabs_base_url", "cartesia_base_url", "fishaudio_base_url",
                     "azure_speech_base_url", "google_tts_base_url")
    @classmethod
    def _origin(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip().rstrip("/")
        if not v.startswith(("https://", "http://")):
            raise ValueError("a provider base URL is an http(s)://host[:port] origin")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value().strip():
            return None
        if not v.get_secret_value().strip().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL is redis://[user:password@]host:port/db, rediss://… or unix://…")
        return SecretStr(v.get_secret_value().strip())

    @field_validator("voice_store_dir", mode="before")
    @classmethod
    def _empty_store_dir_is_default(cls, v: object) -> object:
        """``TELEBRIDGE_VOICE_STORE_DIR=`` (as in .env.example) means the default data directory, not the cwd."""
        return Settings.default_voice_store_dir() if isinstance(v, str) and not v.strip() else v

    @field_validator("voices_file", "recordings_dir", mode="before")
    @classmethod
    def _empty_path_is_none(cls, v: object) -> object:
        """``TELEBRIDGE_RECORDINGS_DIR=`` (as in .env.example) means unset, not the current directory."""
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip().rstrip("/")
        if not v.startswith(("https://", "http://")):
            raise ValueError("TELEBRIDGE_PUBLIC_URL must start with https:// (or http:// for local testing)")
        return v

    @cached_property
    def signatures_enforced(self) -> bool:
        """Whether requests must carry a valid Twilio signature."""
        if self.validate_signatures is False:
            return False
        if self.validate_signatures is True and self.twilio_auth_token is None:
            raise ValueError("TELEBRIDGE_VALIDATE_SIGNATURES=true needs TWILIO_AUTH_TOKEN")
        return self.twilio_auth_token is not None

    def auth_token(self) -> str | None:
        return self.twilio_auth_token.get_secret_value() if self.twilio_auth_token else None

    def log_security_posture(self) -> None:
        if self.validate_signatures is False:
            log.warning("Twilio signature validation is DISABLED (TELEBRIDGE_VALIDATE_SIGNATURES=false): anyone "
                        "who finds this URL can place calls into your agent. Use only for local testing.")
        elif not self.signatures_enforced:
            log.warning("No TWILIO_AUTH_TOKEN set: Twilio signatures cannot be validated. Set it before "
                        "exposing this service.")
        from .security import log_access_posture

        log_access_posture(self)
