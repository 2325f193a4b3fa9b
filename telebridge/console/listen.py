"""Listening in to a live phone call from the console -- only while the call is recorded with consent.

What the operator hears is what both ends hear: the caller's audio as it arrives (20 ms μ-law frames, real
time) mixed with the agent's audio as the caller's phone plays it. The agent's audio leaves telebridge a little
ahead of playback (the outbound lead); it waits in a FIFO here and each caller frame takes the same number of
agent samples out of it, so the agent is heard at playback pace, and a ``clear`` (barge-in) empties the FIFO as it
empties Twilio's buffer: the operator never hears audio the caller did not.

Consent is the recording's: the tap carries audio only while ``consent()`` is true (the call's
:class:`~telebridge.recording.SessionRecording` is active). Withdrawing it mid-call (``allow_recording`` set
to False) ends every listener at once.

:class:`Mixer` is plain (bytes in, PCM16 out); :class:`ListenTap` adds the listeners' bounded queues. A slow
listener loses audio (its queue drops the oldest), it never slows the call.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import numpy as np

from ..audio.g711 import ulaw_decode_float
from ..audio.resample import Resampler

RATE = 8000
OUT_RATE = 24000  # what the listener gets (the softphone's playback worklet takes 24 kHz PCM16)
MAX_AGENT_BACKLOG = RATE * 2  # samples of agent audio waiting for playback (the lead is ~0.3 s)
LISTENER_QUEUE = 50  # 20 ms frames: one second of audio per listener


class Mixer:
    """Caller frames in (μ-law), agent audio in (μ-law, ahead of playback); PCM16 mono 24 kHz frames out."""

    def __init__(self) -> None:
        self._agent: collections.deque[np.ndarray] = collections.deque()
        self._agent_samples = 0
        self._up = Resampler(RATE, OUT_RATE)

    def agent(self, ulaw: bytes) -> None:
        self._agent.append(ulaw_decode_float(ulaw))
        self._agent_samples += len(ulaw)
        while self._agent_samples > MAX_AGENT_BACKLOG and self._agent:
            self._agent_samples -= len(self._agent.popleft())

    def clear(self) -> None:
        """The agent's audio was cut (Twilio ``clear``): what had not played yet is never heard."""
        self._agent.clear()
        self._agent_samples = 0

    def caller(self, ulaw: bytes) -> bytes:
        """One caller frame, mixed with the agent audio playing during it, as 24 kHz PCM16 little-endian."""
        mixed = ulaw_decode_float(ulaw).astype(np.float32, copy=True)
        need, at = len(mixed), 0
        while need > 0 and self._agent:
            head = self._agent[0]
            take = min(need, len(head))
            mixed[at : at + take] += head[:take]
            if take == len(head):
                self._agent.popleft()
            else:
                self._agent[0] = head[take:]
            self._agent_samples -= take
            at += take
            need -= take
        return (np.clip(self._up.process(mixed), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class Listener:
    """One operator's ear: a bounded queue of PCM16 frames; ``None`` in the queue means the tap closed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(LISTENER_QUEUE)
        self.dropped = 0

    def put(self, item: bytes | None) -> None:
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()  # the oldest audio goes: a listener never holds the call back
                self.dropped += 1


class ListenTap:
    """One live phone call's audio for the console, while ``consent()`` holds and anyone listens."""

    def __init__(self, consent: Callable[[], bool]) -> None:
        self.consent = consent
        self.mixer = Mixer()
        self.listeners: list[Listener] = []
        self.closed = False

    @property
    def allowed(self) -> bool:
        return not self.closed and bool(self.consent())

    def listen(self) -> Listener | None:
        """A new listener, or None when the call is not recorded with consent (or is over)."""
        if not self.allowed:
            return None
        listener = Listener()
        self.listeners.append(listener)
        return listener

    def leave(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    # Fed by the media loop (caller) and the outbound sender (agent); cheap when nobody listens.
    def caller(self, ulaw: bytes) -> None:
        if not self.listeners:
            return
        if not self.consent():
            self.close()
            return
        frame = self.mixer.caller(ulaw)
        for listener in self.listeners:
            listener.put(frame)

    def agent(self, ulaw: bytes) -> None:
        if self.listeners:
            self.mixer.agent(ulaw)

    def clear(self) -> None:
        self.mixer.clear()

    def close(self) -> None:
        """The call ended or consent was withdrawn: every listener hears the end."""
        self.closed = True
        for listener in self.listeners:
            listener.put(None)
        self.listeners.clear()
        self.mixer.clear()
