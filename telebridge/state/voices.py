"""Cloned voices shared through Redis: a voice cloned on one instance is usable at once by a call on another.

The :class:`~telebridge.voices.store.VoiceStore` stays the one place voices are looked up (synchronously, from a
memory cache); this module keeps that cache in step with the other instances:

* ``<prefix>:voices`` — a hash, clone name → the clone's JSON (the same content as its file: derived settings or
  the provider's voice id, never the sample, never an API key). Written by :meth:`RedisVoices.publish` right
  after ``POST /v1/voices`` stored the clone, before the response goes out.
* a ``voice`` event on the channel tells every instance to fetch it now;
* :meth:`RedisVoices.ensure` fetches a clone by name on a miss, before a call or session resolves it, so a voice
  used a millisecond after it was cloned elsewhere is found even if the event is still on its way;
* on start and whenever Redis comes back, every clone is read (:meth:`RedisVoices.refresh`), and clones made
  while Redis was away are pushed.

Without Redis, :class:`LocalVoices` does nothing: clones are shared only through ``TELEBRIDGE_VOICE_STORE_DIR``
(which processes on one machine, or on a shared volume, may share).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

from pydantic import ValidationError

from telebridge.voices.store import CLONED_NAME, SECRETS, VoiceEntry, VoiceStore

from .redis_client import RedisLink

log = logging.getLogger("telebridge.state.voices")

__all__ = ["VoiceSync", "LocalVoices", "RedisVoices"]

_NAMES_IN_TEXT = re.compile(r"cloned_voice_[A-Za-z0-9]{6,32}")


class VoiceSync(Protocol):
    async def start(self) -> None: ...

    async def ensure(self, name: str) -> None: ...

    async def ensure_in(self, text: str) -> None: ...

    async def refresh(self) -> None: ...

    async def publish(self, entry: VoiceEntry) -> None: ...


class LocalVoices:
    """No sharing beyond the clone directory."""

    async def start(self) -> None:
        return None

    async def ensure(self, name: str) -> None:
        return None

    async def ensure_in(self, text: str) -> None:
        return None

    async def refresh(self) -> None:
        return None

    async def publish(self, entry: VoiceEntry) -> None:
        return None


class RedisVoices:
    def __init__(self, link: RedisLink, store: VoiceStore) -> None:
        self.link = link
        self.store = store
        self._unpublished: dict[str, VoiceEntry] = {}
        link.on_event("voice", self._on_event)
        link.on_reconnect(self._on_reconnect)

    @property
    def _hash(self) -> str:
        return self.link.key("voices")

    def _adopt(self, raw: bytes | str | None) -> VoiceEntry | None:
        if not raw:
            return None
        try:
            entry = VoiceEntry.model_validate_json(raw)
        except ValidationError as exc:
            log.warning("ignoring an unreadable shared voice: %s", exc)
            return None
        if not entry.cloned or not CLONED_NAME.match(entry.name):
            return None
        self.store.adopt(entry)
        return entry

    async def start(self) -> None:
        await self.refresh()

    async def refresh(self) -> None:
        """Every shared clone into the local cache."""
        voices = await self.link.run(lambda r: r.hgetall(self._hash), {})
        for raw in voices.values():
            self._adopt(raw)

    async def ensure(self, name: str) -> None:
        """Make sure a clone called ``name`` is in the local cache if any instance has it."""
        if not CLONED_NAME.match(name) or self.store.get(name) is not None:
            return
        self._adopt(await self.link.run(lambda r: r.hget(self._hash, name), None))

    async def ensure_in(self, text: str) -> None:
        """:meth:`ensure` every clone name a client message mentions (a realtime ``session.update``)."""
        if "cloned_voice_" in text:
            for name in set(_NAMES_IN_TEXT.findall(text)):
                await self.ensure(name)

    async def publish(self, entry: VoiceEntry) -> None:
        """Share a clone this instance just stored (kept for later if Redis is away now)."""
        body = entry.model_dump_json(exclude=SECRETS)

        async def op(r: Any) -> bool:
            await r.hset(self._hash, entry.name, body)
            return True

        if await self.link.run(op, False):
            self._unpublished.pop(entry.name, None)
            await self.link.publish("voice", name=entry.name)
        else:
            self._unpublished[entry.name] = entry

    async def _on_event(self, event: dict[str, Any]) -> None:
        name = str(event.get("name") or "")
        if event.get("from") != self.link.instance and CLONED_NAME.match(name):
            self._adopt(await self.link.run(lambda r: r.hget(self._hash, name), None))

    async def _on_reconnect(self) -> None:
        for entry in list(self._unpublished.values()):
            await self.publish(entry)
        await self.refresh()
