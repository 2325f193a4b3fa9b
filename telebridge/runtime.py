"""Process-wide state: the loaded agent, the shared models and worker pools, and the live calls.

Models are loaded once per process and shared by every call; inference runs in bounded worker pools so the
event loop only ever moves bytes.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import hashlib
import logging
from typing import TYPE_CHECKING, Any

from . import metrics, tracing
from .agent import Agent, load_agent
from .config import STT, TTS
from .inference import InferencePool
from .memory import Trimmer
from .pipeline.finished import FinishedCall
from .pipeline.smart_turn import SmartTurnUnavailable, default_model_path, shared_smart_turn
from .pipeline.turn_classifier import TurnClassifier
from .pipeline.silero import SileroModel
from .pipeline.vad import VadHub
from .providers.context import ProviderContext
from .providers.health import ProviderHealth
from .providers.registry import create_stt, create_tts
from .providers.tts.cache import CachedTTS
from .settings import Settings
from .voices.store import VoiceStore

if TYPE_CHECKING:
    from .pipeline.call import CallSession

log = logging.getLogger("telebridge.runtime")


class BoundedDict(collections.OrderedDict):  # type: ignore[type-arg]
    """A dict that forgets its oldest entries beyond ``limit`` (per-call bookkeeping must not grow forever)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: object, value: object) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)

DEMO_AGENT = "telebridge.agents.demo:agent"
LOCAL_PROVIDERS = ("whisper", "piper")


def config_key(cfg: Any) -> str:
    """An engine cache key: the config's JSON with its secrets hashed in (the JSON alone masks them, so two
    agents with different keys would otherwise share one client)."""
    secrets = []
    for name in ("api_key", "credentials"):
        value = getattr(cfg, name, None)
        if value is not None and hasattr(value, "get_secret_value"):
            secrets.append(repr(value.get_secret_value()))
    digest = hashlib.sha256("\0".join(secrets).encode()).hexdigest()[:16] if secrets else ""
    return cfg.model_dump_json() + digest


def _turn_classifier(pool: InferencePool) -> TurnClassifier | None:
    """The process's end-of-turn classifier, or None (with one log line) when the model is not installed."""
    try:
        default_model_path()
    except SmartTurnUnavailable as exc:
        log.warning("no end-of-turn model: %s; turns end after the fixed endpointing delays", exc)
        return None
    return TurnClassifier(shared_smart_turn, pool.run)


class Runtime:
    def __init__(self, settings: Settings, agent: Agent | None = None) -> None:
        self.settings = settings
        self.agent: Agent = agent if agent is not None else load_agent(settings.agent or DEMO_AGENT)
        self.vad_pool = InferencePool("vad", max_workers=1, max_pending=64)
        self.speech_pool = InferencePool("speech", max_workers=settings.speech_workers, max_pending=256)
        self.vad_hub = VadHub(SileroModel(threads=1), self.vad_pool, rest_every=settings.vad_rest_ticks)
        # The end-of-turn model (Smart Turn v3), asked at callers' pauses: its own worker, never the VAD's.
        self.turn_pool = InferencePool("turn", max_workers=1, max_pending=8)
        self.turn_classifier: TurnClassifier | None = _turn_classifier(self.turn_pool)
        self.calls: dict[str, CallSession] = {}
        # The last few finished calls (history, latency figures), for /debug tooling, tests and benchmarks: slim
        # records (pipeline/finished.py), never the sessions themselves and their audio buffers.
        self.finished: collections.deque[FinishedCall] = collections.deque(maxlen=64)
        # Freed memory back to the OS after calls end, collected first when none is left (telebridge/memory.py).
        self.memory = Trimmer(live=lambda: len(self.calls))
        self.draining = False
        self._engines: dict[tuple[str, str, bool], Any] = {}
        self._loading: dict[tuple[str, str, bool], asyncio.Lock] = {}
        self.provider_health = ProviderHealth()
        self._hub_task: asyncio.Task | None = None
        # Named voices (voices file + clones): realtime sessions pick one, agents name one in TTS.Piper(voice=...).
        self.voices = VoiceStore(settings.voices_file, settings.voice_store_dir)
        self._cloner: Any = None
        from .recording import Recorder
        from .state import SharedState

        # Shared with the other workers/instances through Redis when REDIS_URL is set (telebridge/state/).
        self.state = SharedState(settings, self.voices)
        self.recorder = Recorder(settings.recordings_dir, index=self.state.recordings)
        # How each stream we closed ended ("completed" or "failed"), for Twilio's <Connect action> request.
        self.stream_outcomes = self.state.outcomes
        # Every call this process hears of (placed here, status callbacks, inbound): GET /v1/calls/{sid}.
        self.call_registry = self.state.calls
        self._call_agents: dict[str, Agent] = {}
        self._metered: dict[int, tuple[str, str]] = {}  # id(call) -> its calls_active labels, until unregistered
        from .console.service import Console

        self.console = Console(self.calls, history=settings.console_history)  # /console: live calls, last calls

    def agent_for(self, spec: str | None) -> Agent:
        """The agent for one call: the server's, or the one an outbound call named (loaded once, then cached)."""
        if not spec:
            return self.agent
        agent = self._call_agents.get(spec)
        if agent is None:
            agent = self._call_agents[spec] = load_agent(spec)
        return agent

    @property
    def accepting(self) -> bool:
        return not self.draining and len(self.calls) < self.settings.max_calls

    async def start(self, *, warmup: bool = True) -> None:
        self._hub_task = asyncio.get_running_loop().create_task(self.vad_hub.run(), name="vad-hub")
        self.state.bind(self)
        await self.state.start()
        if warmup:
            if self.settings.preload_local:
                # Load the default local models now, not on the first caller's first words.
                stt = await self.stt_for(STT.Whisper())
                tts = await self.tts_for(TTS.Piper())
                for engine in (stt, tts):
                    warm = getattr(engine, "warmup", None)
                    if warm is not None:
                        await warm()
            if self.turn_classifier is not None:  # (any agent may use it, whatever its speech providers)
                await self.turn_classifier.load()
        # What start-up made (modules, models, the agent) lives as long as the process: out of the collector's
        # sight, so the full collection when the last call ends (memory.py) walks only what calls left behind.
        gc.freeze()
        log.info("telebridge ready: agent %r", self.agent.id)

    async def stop(self) -> None:
        self.draining = True
        self.memory.cancel()
        await self.console.aclose()
        await self.state.stop()
        if self._hub_task:
            self._hub_task.cancel()
            await asyncio.gather(self._hub_task, return_exceptions=True)
        for engine in list(self._engines.values()):  # cloud clients hold HTTP connections: close them on this loop
            closer = getattr(engine, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:
                    log.debug("closing engine %r failed", engine, exc_info=True)
        if self.turn_classifier is not None:
            await self.turn_classifier.aclose()
        self.vad_pool.shutdown()
        self.speech_pool.shutdown()
        self.turn_pool.shutdown()

    def register(self, call: CallSession) -> None:
        self.calls[call.call_id] = call
        labels = self._metered[id(call)] = metrics.call_started(call)  # telebridge_calls_active
        tracing.call_started(call, labels)  # OpenTelemetry, when on
        self.console.call_started(call)  # shown on /console, and followed there (an observer of its own)

    def unregister(self, call: CallSession) -> None:
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        self.finished.append(FinishedCall.of(call))
        labels = self._metered.pop(id(call), None)
        if labels is not None:
            metrics.call_ended(labels, call)  # telebridge_calls_active, telebridge_calls_total{outcome}
        tracing.call_ended(call, metrics.call_outcome(call))
        self.console.call_ended(call)
        self.memory.call_ended(idle=not self.calls)

    # --- engines --------------------------------------------------------------------------------------------
    # Loading a model takes a second or more: it happens in a worker thread (never on the event loop), once per
    # distinct configuration, and every call using that configuration shares the result.
    # ``phone``: the call carries 8 kHz μ-law, so cloud clients ask for it natively (local engines ignore it).
    async def stt_for(self, cfg: Any, *, phone: bool = False) -> Any:
        phone = phone and cfg.provider not in LOCAL_PROVIDERS
        return await self._engine(("stt", config_key(cfg), phone), lambda: create_stt(cfg, self.provider_context(phone)))

    async def tts_for(self, cfg: Any, *, phone: bool = False) -> Any:
        name = getattr(cfg, "voice", None) if getattr(cfg, "provider", None) == "piper" else None
        if name:
            await self.state.voices.ensure(name)  # a clone made on another instance a moment ago
        cfg = self.resolve_tts(cfg)
        phone = phone and cfg.provider not in LOCAL_PROVIDERS
        return await self._engine(("tts", config_key(cfg), phone), lambda: create_tts(cfg, self.provider_context(phone)))

    def provider_context(self, phone: bool) -> ProviderContext:
        return ProviderContext(self.settings, self.speech_pool, self.provider_health, phone=phone)

    def resolve_tts(self, cfg: Any) -> Any:
        """``TTS.Piper(voice="name")`` → that voice's own TTS configuration (raises ``UnknownVoice``).

        A store voice may be any provider's (a cloud clone, or a voices-file entry such as ElevenLabs or
        Cartesia). Its API key, unless the voice set one itself, is read from the provider's environment
        variable now (clones never store keys), so a rotated key applies without re-cloning.
        """
        name = getattr(cfg, "voice", None) if getattr(cfg, "provider", None) == "piper" else None
        if not name:
            return cfg
        resolved = self.voices.tts_for(name)
        if getattr(resolved, "provider", None) == "piper" and getattr(resolved, "voice", None):
            raise ValueError(f"voice {name!r} names another voice ({resolved.voice!r}); voices do not chain")
        if "api_key" in type(resolved).model_fields and "api_key" not in resolved.model_fields_set:
            fields = {k: getattr(resolved, k) for k in resolved.model_fields_set if k != "api_key"}
            resolved = type(resolved).model_validate(fields)
        return resolved

    @property
    def cloner(self) -> Any:
        """Clones uploaded samples: Piper pitch/pace matching (:mod:`telebridge.voices.cloning`), or real cloning
        at ElevenLabs / Cartesia (:mod:`telebridge.voices.cloud_cloning`), per ``voice_cloning_provider``."""
        if self._cloner is None:
            provider = self.settings.voice_cloning_provider
            if provider in ("elevenlabs", "cartesia"):
                from .voices.cloud_cloning import CloudCloner

                self._cloner = CloudCloner(self.voices, provider, self.provider_context(False),
                                           run_blocking=self.speech_pool.run)
                return self._cloner
            from .voices.cloning import PiperCloner

            async def transcribe(audio16k: Any) -> str:
                stt = await self.stt_for(STT.Whisper())
                return str((await stt.transcribe(audio16k)).text)

            self._cloner = PiperCloner(self.voices, run_blocking=self.speech_pool.run, transcribe=transcribe)
        return self._cloner

    def clear_phrase_caches(self) -> int:
        """Empty every TTS engine's phrase cache (a new voice file under an old name, benchmarks that must
        synthesize afresh); returns how many phrases were dropped."""
        return sum(engine.clear() for engine in list(self._engines.values()) if isinstance(engine, CachedTTS))

    async def _engine(self, key: tuple[str, str, bool], make: Any) -> Any:
        engine = self._engines.get(key)
        if engine is not None:
            return engine
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:
            engine = self._engines.get(key)
            if engine is None:
                engine = await asyncio.to_thread(make)
                self._engines[key] = engine
        return engine
