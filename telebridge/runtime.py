"""Process-wide state: the loaded agent, the shared models and worker pools, and the live calls.

Models are loaded once per process and shared by every call; inference runs in bounded worker pools so the
event loop only ever moves bytes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any

from .agent import Agent, load_agent
from .config import STT, TTS
from .inference import InferencePool
from .pipeline.vad import SileroModel, VadHub
from .settings import Settings

if TYPE_CHECKING:
    from .pipeline.call import CallSession

log = logging.getLogger("telebridge.runtime")

DEMO_AGENT = "telebridge.agents.demo:agent"


class Runtime:
    def __init__(self, settings: Settings, agent: Agent | None = None) -> None:
        self.settings = settings
        self.agent: Agent = agent if agent is not None else load_agent(settings.agent or DEMO_AGENT)
        self.vad_pool = InferencePool("vad", max_workers=1, max_pending=64)
        self.speech_pool = InferencePool("speech", max_workers=settings.speech_workers, max_pending=256)
        self.vad_hub = VadHub(SileroModel(threads=1), self.vad_pool)
        self.calls: dict[str, CallSession] = {}
        # The last few finished calls (history, latency figures), for /debug tooling, tests and benchmarks.
        self.finished: collections.deque[CallSession] = collections.deque(maxlen=64)
        self.draining = False
        self._engines: dict[tuple[str, str], Any] = {}
        self._hub_task: asyncio.Task | None = None

    @property
    def accepting(self) -> bool:
        return not self.draining and len(self.calls) < self.settings.max_calls

    async def start(self, *, warmup: bool = True) -> None:
        self._hub_task = asyncio.get_running_loop().create_task(self.vad_hub.run(), name="vad-hub")
        if warmup:
            # Load the default local models now, not on the first caller's first words.
            stt = self.stt_for(STT.Whisper())
            tts = self.tts_for(TTS.Piper())
            for engine in (stt, tts):
                warm = getattr(engine, "warmup", None)
                if warm is not None:
                    await warm()
        log.info("telebridge ready: agent %r", self.agent.id)

    async def stop(self) -> None:
        self.draining = True
        if self._hub_task:
            self._hub_task.cancel()
            await asyncio.gather(self._hub_task, return_exceptions=True)
        self.vad_pool.shutdown()
        self.speech_pool.shutdown()

    def register(self, call: CallSession) -> None:
        self.calls[call.call_id] = call

    def unregister(self, call: CallSession) -> None:
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        self.finished.append(call)

    # --- engines --------------------------------------------------------------------------------------------
    def stt_for(self, cfg: Any) -> Any:
        key = ("stt", cfg.model_dump_json())
        engine = self._engines.get(key)
        if engine is None:
            if cfg.provider != "whisper":
                raise ValueError(f"STT provider {cfg.provider!r} has no client in this build")
            from .providers.stt.whisper import WhisperSTT

            engine = WhisperSTT(cfg.model, pool=self.speech_pool, language=cfg.language, beam_size=cfg.beam_size)
            self._engines[key] = engine
        return engine

    def tts_for(self, cfg: Any) -> Any:
        key = ("tts", cfg.model_dump_json())
        engine = self._engines.get(key)
        if engine is None:
            if cfg.provider != "piper":
                raise ValueError(f"TTS provider {cfg.provider!r} has no client in this build")
            from .providers.tts.piper import PiperTTS

            from .providers.tts.cache import CachedTTS

            engine = CachedTTS(PiperTTS(cfg.model, pool=self.speech_pool, speaker=cfg.speaker,
                                        length_scale=cfg.length_scale, noise_scale=cfg.noise_scale))
            self._engines[key] = engine
        return engine
