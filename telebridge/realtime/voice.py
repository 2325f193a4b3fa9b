"""Which voice a realtime session speaks with, and when a new one takes over.

The client names a store voice in ``session.voice`` (by its name, or by Unmute's ``path_on_server``); without
one the agent's own TTS speaks. A voice chosen before the agent is configured is applied to its SessionConfig
(:meth:`SessionVoice.agent_configured`). One chosen later is loaded at once (:meth:`SessionVoice.prepare`: an
unusable voice is refused while the old one stays) and switched in when the next reply starts
(:meth:`SessionVoice.before_reply`), so a reply never changes voice halfway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config.tts import PiperTTS
from ..providers.tts.base import open_session

if TYPE_CHECKING:
    from ..pipeline.call import CallSession
    from ..runtime import Runtime
    from ..session import SessionConfig as AgentSessionConfig
    from .protocol import SessionConfig


class SessionVoice:
    def __init__(self, runtime: Runtime, session_id: str) -> None:
        self.runtime = runtime
        self.session_id = session_id
        self.name: str | None = None  # the store's name of the voice in use (None: the agent's own TTS)
        self._pending: tuple[str | None, Any, Any] | None = None  # (name, TTS config, TTS session) for next reply
        self.agent_tts: Any = None  # the agent's own TTS config, once the agent is configured

    def store_name(self, voice: str | None) -> str | None:
        """The store's name for the voice a client chose (by name, or by Unmute's ``path_on_server``)."""
        return (self.runtime.voices.resolve(voice) or voice) if voice is not None else None

    def next_name(self) -> str | None:
        """The voice the next reply speaks with."""
        return self._pending[0] if self._pending is not None else self.name

    def response_voice(self, cfg: SessionConfig | None) -> str:
        """``response.voice``, never null (Unmute's clients require a string): the voice as the client named
        it, else the store's name, else the agent's own TTS voice or provider."""
        if cfg is not None and cfg.voice is not None and self.store_name(cfg.voice) == self.name:
            return cfg.voice
        if self.name is not None:
            return self.name
        voice = getattr(self.agent_tts, "voice", None)
        return voice if isinstance(voice, str) and voice else str(getattr(self.agent_tts, "provider", "default"))

    async def prepare(self, name: str | None, output_rate: int | None = None) -> None:
        """Load the voice's engine now; it is switched in when the next reply starts. ``output_rate``: the rate the
        session plays at (cached phrases come at it, as for the agent's own voice)."""
        cfg = PiperTTS(voice=name) if name is not None else self.agent_tts
        if cfg is None:  # the agent is not configured yet: agent_configured will pick the voice up
            self._pending = None
            self.name = name
            return
        engine = await self.runtime.tts_for(cfg)
        self._pending = (name, cfg, await open_session(engine, call_id=self.session_id, output_rate=output_rate))

    def before_reply(self, session: CallSession | None) -> None:
        """A reply is about to start: the prepared voice (if any) takes over from it on."""
        pending, self._pending = self._pending, None
        if pending is None or session is None or session.config is None:
            return
        name, cfg, tts_session = pending
        # CallSession reads its TTS session once per reply (the reply's resampler is built from its rate), so
        # switching here, before the reply's task runs, changes the voice exactly from this reply on.
        if session.speech is not None:
            session.speech.use_tts(cfg, tts_session)
        session.config.tts = cfg
        self.name = name

    def agent_configured(self, config: AgentSessionConfig) -> str | None:
        """The agent's SessionConfig is being made: remember its TTS, put the session's voice in (returned)."""
        self.agent_tts = config.tts
        name = self.next_name()
        self._pending = None
        self.name = name
        if name is not None:
            config.tts = PiperTTS(voice=name)
        return name
