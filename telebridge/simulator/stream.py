"""Twilio's side of one connected Media Stream: the 20 ms clock, the script of whoever is on the phone, and the
receiver of server frames (played through Twilio's :class:`~.playback.PlaybackBuffer`).

Time model: tick ``i`` covers ``[i·20 ms, (i+1)·20 ms)``. At its end the buffer plays that interval (so a mark
is echoed exactly when the audio before it has finished), the person's 160 samples for it are sent (chunk
``i+1``, timestamp ``i·20``), then the script is evaluated; audio an action queues starts with the next tick.
:class:`CallHandle` is what Twilio's REST API can do to the live stream (hang up, redirect).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, Protocol

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from telebridge.audio.dtmf import DtmfDetector
from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode

from .constants import _EPS, FRAME, RATE, SPEECH_RMS, TICK, FloatArray, Side
from .playback import PlaybackBuffer
from .results import TimelineEvent
from .echo_line import EchoLine
from .script import Action, Dtmf, EchoChange, LineEcho, Play, Say
from .wire import (
    ServerClear,
    ServerMark,
    ServerMedia,
    TwilioProtocolError,
    decode_server_message,
    twilio_connected,
    twilio_dtmf,
    twilio_mark,
    twilio_media,
    twilio_start,
    twilio_stop,
)

__all__ = ["CallHandle", "TwilioApiHook", "StreamSession"]


class CallHandle:
    """Twilio's control over one live simulated call: what a REST update does to it. Thread-safe."""

    def __init__(self, call_sid: str, account_sid: str, loop: asyncio.AbstractEventLoop, session: StreamSession) -> None:
        self.call_sid = call_sid
        self.account_sid = account_sid
        self._loop = loop
        self._session = session

    def complete(self) -> None:
        """``Status=completed``: Twilio hangs up; the stream gets ``stop`` and closes."""
        self._loop.call_soon_threadsafe(self._session.rest_update, "completed", None)

    def redirect(self, twiml: str) -> None:
        """New TwiML (e.g. ``<Dial>``): the ``<Connect><Stream>`` ends and Twilio runs ``twiml`` instead."""
        self._loop.call_soon_threadsafe(self._session.rest_update, "twiml", twiml)


class TwilioApiHook(Protocol):
    """Something playing Twilio's REST API for simulated calls (tests use a local fake of the real API)."""

    def call_started(self, handle: CallHandle) -> None: ...

    def call_ended(self, call_sid: str) -> None: ...


class _CallerAudio:
    """Audio the caller has queued to send, consumed 160 samples per tick."""

    def __init__(self) -> None:
        self._chunks: list[FloatArray] = []
        self._pos = 0  # read offset into _chunks[0]
        self.queued = 0

    def push(self, audio: FloatArray) -> None:
        if audio.size:
            self._chunks.append(audio)
            self.queued += audio.size

    def take(self, n: int) -> FloatArray:
        out = np.zeros(n, dtype=np.float32)
        filled = 0
        while filled < n and self._chunks:
            head = self._chunks[0]
            k = min(n - filled, head.size - self._pos)
            out[filled : filled + k] = head[self._pos : self._pos + k]
            filled += k
            self._pos += k
            if self._pos >= head.size:
                self._chunks.pop(0)
                self._pos = 0
        self.queued -= filled
        return out


class StreamSession:
    """One connected stream: the 20 ms clock, the caller's script, and the receiver of server frames."""

    def __init__(
        self,
        ws: ClientConnection,
        *,
        stream_sid: str,
        call_sid: str,
        account_sid: str,
        script: Sequence[Action],
        audio: Mapping[int, FloatArray],
        duration: float,
        end_when_quiet: float | None,
        realtime: bool,
        custom_parameters: Mapping[str, str],
        echo: LineEcho | None = None,
        line_noise_dbfs: float | None = None,
        noise_seed: int = 0,
    ) -> None:
        self.ws = ws
        self.echo = echo
        self._echo_line = EchoLine(echo)
        self._noise_level = 10 ** (line_noise_dbfs / 20) if line_noise_dbfs is not None else 0.0
        self._noise_rng = np.random.default_rng(noise_seed)
        self.caller_clean: list[FloatArray] = []
        self._agent_talk = 0.0  # seconds of agent audio heard since the caller's previous action
        self.rest: tuple[str, str | None] | None = None
        self.custom_parameters = dict(custom_parameters)
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.script = script
        self.audio = audio
        self.duration = duration
        self.end_when_quiet = end_when_quiet
        self.realtime = realtime
        self.buffer = PlaybackBuffer()
        self.keypad = DtmfDetector(RATE)  # keys the agent presses, heard in its audio as a phone menu hears them
        self.caller = _CallerAudio()
        self.events: list[TimelineEvent] = []
        self.protocol_errors: list[str] = []
        self.heard: list[FloatArray] = []
        self.sent: list[FloatArray] = []
        self.ended_by: Literal["hangup", "duration", "quiet", "server", "rest"] = "duration"
        self.max_lateness = 0.0
        self._seq = 0
        self._lock = asyncio.Lock()
        self._server_closed = asyncio.Event()
        self._hanging_up = False
        self._next_action = 0
        self._now = 0.0  # virtual time of the last completed tick
        self._t0 = 0.0
        self._last_agent_speech = -math.inf  # end of the last loud heard frame
        self._caller_ref = 0.0  # when the caller last finished doing something
        self._agent_playing = False

    # -- sending ------------------------------------------------------------------------------------------------

    async def _send(self, build: Callable[[int], str]) -> None:
        """Number and send a frame atomically, so sequenceNumbers go out in order from both tasks."""
        async with self._lock:
            self._seq += 1
            await self.ws.send(build(self._seq))

    def _clock(self) -> float:
        if self.realtime:
            return max(0.0, asyncio.get_running_loop().time() - self._t0)
        return self._now

    def _event(self, t: float, side: Side, kind: str, text: str = "") -> None:
        self.events.append(TimelineEvent(round(t, 4), side, kind, text))

    @property
    def now(self) -> float:
        """Seconds since the stream started (the virtual clock when not in real time)."""
        return self._clock()

    def note(self, side: Side, kind: str, text: str = "") -> None:
        """Put something that happened outside the stream (e.g. an AMD verdict) on the timeline, now."""
        self._event(self._clock(), side, kind, text)

    # -- receiving ----------------------------------------------------------------------------------------------

    async def receive(self) -> None:
        try:
            async for frame in self.ws:
                await self._on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            if not self._hanging_up:
                code = self.ws.close_code
                self._event(self._clock(), "agent", "close", f"{code} {self.ws.close_reason or ''}".strip())
            self._server_closed.set()

    async def _on_frame(self, frame: str | bytes) -> None:
        try:
            msg = decode_server_message(frame, expected_stream_sid=self.stream_sid)
        except TwilioProtocolError as exc:
            text = f"{exc.code}: {exc.message}"
            self.protocol_errors.append(text)
            self._event(self._clock(), "twilio", "protocol-error", text)
            return
        if isinstance(msg, ServerMedia):
            before = self.buffer.discarded_samples
            self.buffer.media(msg.payload)
            if self.buffer.discarded_samples > before:
                text = "31931: more than 10 minutes of audio buffered; audio discarded"
                self.protocol_errors.append(text)
                self._event(self._clock(), "twilio", "protocol-error", text)
        elif isinstance(msg, ServerMark):
            self.buffer.mark(msg.name)
        elif isinstance(msg, ServerClear):
            t = self._clock()
            flushed_ms = self.buffer.buffered_samples * 1000 // RATE
            names = self.buffer.clear()
            self._event(t, "agent", "clear", f"flushed {flushed_ms} ms, {len(names)} mark(s)")
            for name in names:
                await self._send(lambda seq, n=name: twilio_mark(self.stream_sid, n, seq))
                self._event(t, "twilio", "mark", name)

    # -- the clock ----------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Send connected/start, then tick every 20 ms until hang-up, the time limit, or the server closes."""
        loop = asyncio.get_running_loop()
        await self.ws.send(twilio_connected())
        await self._send(
            lambda seq: twilio_start(self.stream_sid, self.call_sid, self.account_sid, self.custom_parameters, seq)
        )
        self._t0 = loop.time()
        receiver = asyncio.create_task(self.receive())
        try:
            if not await self._evaluate(0.0):
                await self._tick_loop(loop)
        except ConnectionClosed:  # a send failed: the server closed the socket under us
            self.ended_by = "server"
        finally:
            await self._finish(receiver)

    async def _tick_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        i = 0
        while not self._server_closed.is_set():
            now = (i + 1) * TICK
            if self.realtime:
                delay = self._t0 + now - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    self.max_lateness = max(self.max_lateness, -delay)
                    await asyncio.sleep(0)
            else:
                await asyncio.sleep(0)
            if self._server_closed.is_set():
                break
            if self.rest is not None:
                self.ended_by = "rest"
                return
            self._now = now
            heard = await self._play_tick(i, now)
            clean = self.caller.take(FRAME)
            self.caller_clean.append(clean)
            payload = ulaw_encode(self._line(clean, heard))
            self.sent.append(ulaw_decode_float(payload))  # what went on the wire, μ-law quantized
            await self._send(
                lambda seq, p=payload, c=i + 1, ts=i * 20: twilio_media(self.stream_sid, p, c, ts, seq)
            )
            if await self._evaluate(now):
                return
            if now >= self.duration - _EPS:
                self.ended_by = "duration"
                self._event(now, "caller", "hangup", "time limit")
                return
            i += 1
        self.ended_by = "server"

    def _line(self, clean: FloatArray, heard: FloatArray) -> FloatArray:
        """What the caller's line carries: their own sound, plus the echo of what they hear, plus noise."""
        out = clean
        echo = self._echo_line.frame(heard)  # always: the line keeps what was heard, for a path that appears later
        if self._echo_line.echo is not None:
            out = out + echo
        if self._noise_level:
            out = out + (self._noise_rng.standard_normal(FRAME) * self._noise_level).astype(np.float32)
        return out.astype(np.float32, copy=False)

    def rest_update(self, kind: str, twiml: str | None) -> None:
        """Twilio's REST API changed the call (see :class:`CallHandle`); the tick loop ends the stream."""
        if self.rest is None:
            self.rest = (kind, twiml)
            self._event(self._clock(), "twilio", "rest-update", kind if twiml is None else f"{kind}: {twiml}")

    async def _play_tick(self, i: int, now: float) -> FloatArray:
        before = self.buffer.played_samples
        played, marks = self.buffer.advance(FRAME)
        audio = ulaw_decode_float(played)
        self.heard.append(audio)
        for hit in self.keypad.push(audio):
            self._event(hit.start, "agent", "dtmf", hit.key)
        real = self.buffer.played_samples > before
        if real and now - TICK >= self._caller_ref - _EPS:
            self._agent_talk += (self.buffer.played_samples - before) / RATE
        if real and not self._agent_playing:
            self._event(i * TICK, "agent", "media-start")
        self._agent_playing = real
        if float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) > SPEECH_RMS:
            self._last_agent_speech = now
        for name in marks:
            await self._send(lambda seq, n=name: twilio_mark(self.stream_sid, n, seq))
            self._event(now, "twilio", "mark", name)
        return audio

    # -- the script ---------------------------------------------------------------------------------------------

    def _agent_quiet(self, now: float, quiet: float) -> bool:
        """The agent spoke after the caller's last action finished, and has been silent for ``quiet`` s."""
        return self._last_agent_speech > self._caller_ref + _EPS and now - self._last_agent_speech >= quiet - _EPS

    async def _evaluate(self, now: float) -> bool:
        """Fire every action whose turn has come; True when the call should end."""
        while self._next_action < len(self.script):
            action = self.script[self._next_action]
            busy = self.caller.queued > 0
            if action.at is not None and now < action.at - _EPS:
                break
            if action.at is None and busy:
                break
            if action.after_agent_quiet is not None and (busy or not self._agent_quiet(now, action.after_agent_quiet)):
                break
            if action.after_agent_speech is not None and (busy or self._agent_talk < action.after_agent_speech - _EPS):
                break
            index = self._next_action
            self._next_action += 1
            if await self._fire(index, action, now):
                return True
        if (
            self.end_when_quiet is not None
            and self._next_action >= len(self.script)
            and self.caller.queued == 0
            and self._agent_quiet(now, self.end_when_quiet)
        ):
            self.ended_by = "quiet"
            self._event(now, "caller", "hangup", "agent quiet")
            return True
        return False

    async def _fire(self, index: int, action: Action, now: float) -> bool:
        self._agent_talk = 0.0
        if isinstance(action, (Say, Play)):
            start = now + self.caller.queued / RATE
            audio = self.audio[index]
            self.caller.push(audio)
            self._caller_ref = max(self._caller_ref, start + audio.size / RATE)
            if isinstance(action, Say):
                self._event(start, "caller", "say", action.text)
            else:
                self._event(start, "caller", "play", action.text or "")
            return False
        self._caller_ref = max(self._caller_ref, now)
        if isinstance(action, EchoChange):
            self._echo_line.set(action.echo)
            self.echo = action.echo
            detail = "none" if action.echo is None else f"{action.echo.gain_db:g} dB, {action.echo.delay * 1000:.0f} ms"
            self._event(now, "caller", "echo", detail)
            return False
        if isinstance(action, Dtmf):
            await self._send(lambda seq: twilio_dtmf(self.stream_sid, action.digit, seq))
            self._event(now, "caller", "dtmf", action.digit)
            return False
        self.ended_by = "hangup"
        self._event(now, "caller", "hangup")
        return True

    # -- ending -------------------------------------------------------------------------------------------------

    async def _finish(self, receiver: asyncio.Task[None]) -> None:
        if self.ended_by != "server" and not self._server_closed.is_set():
            self._hanging_up = True
            try:
                await self._send(
                    lambda seq: twilio_stop(self.stream_sid, self.call_sid, self.account_sid, seq)
                )
                await self.ws.close()
            except ConnectionClosed:
                pass
        try:
            await asyncio.wait_for(asyncio.shield(receiver), timeout=5.0)
        except (asyncio.TimeoutError, ConnectionClosed):
            receiver.cancel()
