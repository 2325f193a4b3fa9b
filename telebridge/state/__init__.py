"""State a telebridge process shares with its peers — the other workers of ``serve --workers N`` and the other
instances behind one address — through Redis when ``REDIS_URL`` is set, kept in-process otherwise.

Each kind of state is a small module behind a Protocol, with an in-process and a Redis implementation:

=================  ==============================================  ===========================================
what               in-process                                      Redis
=================  ==============================================  ===========================================
call registry      :class:`~telebridge.outbound.registry.           :class:`.calls.RedisCallRegistry`
                   MemoryCallRegistry`
stream outcomes    :class:`.calls.StreamOutcomes` (local dict)     … written through to the call's hash
cloned voices      the clone directory (:class:`.voices.LocalVoices`)  :class:`.voices.RedisVoices`
recordings index   :class:`.recordings.MemoryRecordingsIndex`       :class:`.recordings.RedisRecordingsIndex`
session tokens     the guard's own store                           :class:`.tokens.RedisTokens`
abuse limits       :mod:`telebridge.security.limits`               :class:`.guard_limits.RedisGuardLimits`
dial pacing,       :class:`.limiter.LocalDialLimiter`,              :class:`.limiter.RedisDialLimiter`,
campaign claims    :class:`.limiter.LocalClaims`                    :class:`.limiter.RedisClaims`
=================  ==============================================  ===========================================

Redis going away never stops a call: :class:`.redis_client.RedisLink` fails fast and the stores carry on locally,
``GET /v1/health`` says so under ``redis``, and the link reconnects (and pushes what changed) once Redis is back.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from telebridge.outbound.registry import MemoryCallRegistry

from .calls import RedisCallRegistry, StreamOutcomes
from .recordings import MemoryRecordingsIndex, RedisRecordingsIndex
from .voices import LocalVoices, RedisVoices

if TYPE_CHECKING:
    from telebridge.settings import Settings
    from telebridge.voices.store import VoiceStore

    from .redis_client import RedisLink

log = logging.getLogger("telebridge.state")

__all__ = ["SharedState", "default_instance", "open_link"]

# What stops working across workers/instances while Redis is away (reported by /v1/health).
DEGRADED = ("call records and GET /v1/calls show this instance's calls only",
            "voices cloned elsewhere are not found (clones made here are shared once Redis is back)",
            "status and AMD callbacks reaching another instance do not reach this one's calls",
            "session tokens work only on the instance that minted them",
            "the recordings index lists this instance's recordings only",
            "limits on realtime sessions, uploads and console logins count this instance's requests only")


def default_instance() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def open_link(settings: Settings, instance: str | None = None) -> RedisLink | None:
    """A :class:`RedisLink` for ``REDIS_URL``, or None when it is not set."""
    if settings.redis_url is None:
        return None
    from .redis_client import RedisLink

    return RedisLink(settings.redis_url.get_secret_value(), prefix=settings.redis_prefix,
                     instance=instance or settings.instance_id or default_instance())


class SharedState:
    def __init__(self, settings: Settings, voices: VoiceStore) -> None:
        self.instance = settings.instance_id or default_instance()
        self.link = open_link(settings, self.instance)
        self.calls: Any
        if self.link is not None:
            from .tokens import RedisTokens

            self.calls = RedisCallRegistry(self.link, settings.call_record_ttl)
            self.voices: Any = RedisVoices(self.link, voices)
            self.recordings: Any = RedisRecordingsIndex(self.link)
            self.tokens: Any = RedisTokens(self.link)
            self.outcomes = StreamOutcomes(self.calls)
        else:
            self.calls = MemoryCallRegistry()
            self.voices = LocalVoices()
            self.recordings = MemoryRecordingsIndex(self.instance)
            self.tokens = None
            self.outcomes = StreamOutcomes()

    @property
    def shared(self) -> bool:
        return self.link is not None

    def bind(self, runtime: Any) -> None:
        """Events about calls this process runs: an AMD verdict another instance received."""
        if self.link is None:
            return

        async def on_amd(event: dict[str, Any]) -> None:
            session = runtime.calls.get(str(event.get("call_sid") or ""))
            if session is not None and hasattr(session, "on_answered_by"):
                session.on_answered_by(str(event.get("verdict") or "unknown"), source="twilio")

        self.link.on_event("amd", on_amd)

    async def deliver_amd(self, call_sid: str, verdict: str) -> None:
        """An AMD verdict for a call this process does not run: to whichever instance runs it."""
        if self.link is not None:
            await self.link.publish("amd", call_sid=call_sid, verdict=verdict)

    async def start(self) -> None:
        if self.link is not None:
            await self.link.start()
            await self.voices.start()

    async def stop(self) -> None:
        if self.link is not None:
            await self.link.stop()

    def report(self) -> dict[str, Any]:
        """``GET /v1/health``'s ``redis`` section."""
        if self.link is None:
            return {"configured": False, "up": None, "instance": self.instance,
                    "detail": "REDIS_URL not set: calls, voices and the recordings index are this process's own"}
        report = self.link.report()
        if not self.link.up:
            report["degraded"] = list(DEGRADED)
        return report
