"""``WS /v1/realtime``: Unmute's session API on telebridge's conversation loop.

One connection is one conversation with the served agent, run by the same
:class:`~telebridge.pipeline.call.CallSession` as a phone call (same VAD, endpointing, barge-in, LLM loop and
TTS); only the edges differ — base64 audio in JSON events instead of μ-law media frames, and a paced
:class:`~.sink.RealtimeSink` instead of Twilio marks.

Order of things: the client's first valid ``session.update`` starts the conversation (audio sent before it is
discarded, with one ``warning``). Later updates are merged field by field: instructions apply at once, a new
voice from the next reply, the audio formats at once, ``allow_recording`` at once (``false`` deletes what was
recorded). Each accepted update is confirmed by ``session.updated``; a rejected one gets an ``error`` and
changes nothing. ``fatal`` + close code 1011 is kept for what the session cannot survive (the agent failed to
start, the server is full).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..audio.g711 import ulaw_decode_float
from ..audio.resample import Resampler
from ..config.tts import PiperTTS
from ..pipeline.call import CallSession
from ..providers.tts.base import open_session
from ..recording import anonymize_client_event
from ..session import SessionConfig as AgentSessionConfig
from .observer import ConversationEvents
from .protocol import (
    FORMAT_RATES,
    ErrorEvent,
    ErrorInfo,
    InputAudioBufferAppend,
    ServerEvent,
    SessionConfig,
    SessionUpdate,
    SessionUpdated,
    fatal,
    invalid_request,
    parse_client_event,
    warning,
)
from .sink import RealtimeSink

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..settings import Settings

log = logging.getLogger("telebridge.realtime")

SUBPROTOCOL = "realtime"
PATH = "/v1/realtime"
PIPELINE_RATE = 16000  # what the conversation loop's VAD and STT run at
INSTRUCTIONS_NAME = "unmute_instructions"


def apply_instructions(messages: list[dict[str, Any]], prompt: str | None) -> None:
    """Put (or replace, or remove) the instructions' system message, after the agent's own system messages."""
    for i, message in enumerate(messages):
        if message.get("role") == "system" and message.get("name") == INSTRUCTIONS_NAME:
            if prompt is None:
                del messages[i]
            else:
                message["content"] = prompt
            return
    if prompt is None:
        return
    at = 0
    while at < len(messages) and messages[at].get("role") == "system":
        at += 1
    messages.insert(at, {"role": "system", "name": INSTRUCTIONS_NAME, "content": prompt})


class RealtimeConnection:
    def __init__(self, ws: WebSocket, runtime: Runtime, settings: Settings) -> None:
        self.ws = ws
        self.runtime = runtime
        self.settings = settings
        self.id = "rt_" + secrets.token_hex(8)
        self.config: SessionConfig | None = None
        self.fields_set: set[str] = set()
        self.session: CallSession | None = None
        self.sink: RealtimeSink | None = None
        self.events: ConversationEvents | None = None
        self.voice_name: str | None = None
        self._pending_voice: tuple[str | None, Any, Any] | None = None
        self._agent_tts: Any = None
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._sender: asyncio.Task | None = None
        self._update_lock = asyncio.Lock()
        self._input_format = "pcm16"
        self._in_resampler = Resampler(FORMAT_RATES["pcm16"], PIPELINE_RATE)
        self._leftover = b""
        self._early_audio_warned = False
        self.closed = False
        self.recording = runtime.recorder.session(self.id, transport="realtime", agent=runtime.agent.id)

    # --- output ---------------------------------------------------------------------------------------------
    def emit(self, event: ServerEvent) -> None:
        """Queue a server event (in order) and record it. Synchronous: the sink and observer call it."""
        if self.closed:
            return
        data = event.model_dump(mode="json")
        self._outbox.put_nowait(json.dumps(data, ensure_ascii=False))
        if self.recording is not None:
            self.recording.server(data)

    async def _send_loop(self) -> None:
        while True:
            text = await self._outbox.get()
            try:
                if text is None:
                    return
                await self.ws.send_text(text)
            except Exception as exc:  # the client went away
                log.debug("realtime %s: send failed: %r", self.id, exc)
                self.closed = True
                return
            finally:
                self._outbox.task_done()

    async def _flush(self, timeout: float = 2.0) -> None:
        try:
            await asyncio.wait_for(self._outbox.join(), timeout)
        except asyncio.TimeoutError:
            pass

    async def close_fatal(self, code: int, reason: str) -> None:
        """Unrecoverable: tell the client why (``fatal``), then close with ``code`` (1011)."""
        if self.closed:
            return
        self.emit(fatal(reason))
        await self._flush()
        self.closed = True
        try:
            await self.ws.close(code=code, reason=reason[:120])
        except Exception:
            pass

    async def _close_from_session(self, code: int, reason: str) -> None:
        """The conversation loop ends the session: normally (1000, e.g. the agent said goodbye) or not."""
        if code == 1000:
            await self._flush()
            self.closed = True
            try:
                await self.ws.close(code=1000, reason=reason[:120])
            except Exception:
                pass
            return
        await self.close_fatal(code, reason)

    # --- the connection -------------------------------------------------------------------------------------
    async def run(self) -> None:
        offered = self.ws.scope.get("subprotocols") or []
        await self.ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        self._sender = asyncio.get_running_loop().create_task(self._send_loop(), name=f"{self.id}-send")
        try:
            if not self.runtime.accepting:
                await self.close_fatal(1011, "the server is at capacity; try again later")
                return
            await self._receive_loop()
        except WebSocketDisconnect:
            pass
        finally:
            await self._cleanup()

    async def _receive_loop(self) -> None:
        while not self.closed:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                self.emit(ErrorEvent(error=ErrorInfo(
                    type="invalid_request_error", message="Invalid message",
                    details=[{"type": "binary_frame", "loc": [], "msg": "Send JSON text frames, not binary ones"}],
                )))
                continue
            try:
                event = parse_client_event(text, voices=self.runtime.voices)
            except ValidationError as exc:
                self.emit(invalid_request(exc))
                continue
            if isinstance(event, InputAudioBufferAppend):
                self._record_client(event)
                self._on_audio(event.audio)
            elif isinstance(event, SessionUpdate):
                await self._on_session_update(event)

    async def _cleanup(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            await session.aclose()
            self.runtime.unregister(session)
            log.info("realtime %s: ended", self.id)
        if self.recording is not None:
            self.recording.close()
        self.closed = True
        if self._sender is not None:
            self._outbox.put_nowait(None)
            try:
                await asyncio.wait_for(self._sender, 1.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._sender.cancel()

    def _record_client(self, event: InputAudioBufferAppend | SessionUpdate) -> None:
        if self.recording is None:
            return
        if isinstance(event, InputAudioBufferAppend):
            rate, width = FORMAT_RATES[self._input_format], (2 if self._input_format == "pcm16" else 1)
            self.recording.client(anonymize_client_event({"type": event.type, "audio": event.audio}, rate, width))
        else:
            self.recording.client(event.model_dump(mode="json", exclude_unset=True))  # as the client sent it

    # --- audio in -------------------------------------------------------------------------------------------
    def _set_input_format(self, fmt: str) -> None:
        if fmt != self._input_format:
            self._input_format = fmt
            self._in_resampler = Resampler(FORMAT_RATES[fmt], PIPELINE_RATE)
            self._leftover = b""

    def _on_audio(self, data: bytes) -> None:
        if self.session is None:
            if not self._early_audio_warned:
                self._early_audio_warned = True
                self.emit(warning("audio before the first session.update is ignored", code="session_not_configured"))
            return
        if self._input_format == "g711_ulaw":
            pcm = ulaw_decode_float(data)
        else:
            data = self._leftover + data
            usable = len(data) - len(data) % 2
            self._leftover = data[usable:]
            pcm = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / np.float32(32768.0)
        if len(pcm):
            self.session.on_audio(self._in_resampler.process(pcm))

    # --- session.update -------------------------------------------------------------------------------------
    async def _on_session_update(self, event: SessionUpdate) -> None:
        async with self._update_lock:
            new = event.session
            fields = set(new.model_fields_set)
            if self.config is None:
                merged = new
            else:
                merged = self.config.model_copy(update={k: getattr(new, k) for k in fields})
            if self.recording is not None:
                self.recording.set_consent(merged.allow_recording)
                self._record_client(event)
            if self.session is None:
                self.config = merged
                self.fields_set |= fields
                self._set_input_format(merged.input_audio_format)
                self.voice_name = merged.voice
                self._start_session(merged)
            else:
                if "voice" in fields and merged.voice != self._next_voice():
                    try:
                        await self._prepare_voice(merged.voice)
                    except Exception as exc:
                        log.warning("realtime %s: voice %r unusable: %s", self.id, merged.voice, exc)
                        self.emit(ErrorEvent(error=ErrorInfo(
                            type="invalid_request_error", code="voice_unavailable", param="session.voice",
                            message=f"Voice {merged.voice!r} cannot be used: {exc}")))
                        return
                self.config = merged
                self.fields_set |= fields
                self._set_input_format(merged.input_audio_format)
                if self.sink is not None:
                    self.sink.set_output_format(merged.output_audio_format)
                if self.session.config is not None:  # not yet configured: _adjust_config applies them
                    apply_instructions(self.session.history, self._prompt())
            if self.recording is not None:
                self.recording.update_metadata(voice=self._next_voice(), audio_format=merged.output_audio_format)
            echo = merged.echo()
            for key in ("input_audio_format", "output_audio_format"):
                if key in self.fields_set:
                    echo[key] = getattr(merged, key)
            self.emit(SessionUpdated(session=echo))

    def _next_voice(self) -> str | None:
        return self._pending_voice[0] if self._pending_voice is not None else self.voice_name

    def _prompt(self) -> str | None:
        return self.config.instructions.system_prompt() if self.config and self.config.instructions else None

    async def _prepare_voice(self, name: str | None) -> None:
        """Load the voice's engine now; it is switched in when the next reply starts."""
        cfg = PiperTTS(voice=name) if name is not None else self._agent_tts
        if cfg is None:  # the agent is not configured yet: _adjust_config will pick the voice up
            self._pending_voice = None
            self.voice_name = name
            return
        engine = await self.runtime.tts_for(cfg)
        self._pending_voice = (name, cfg, await open_session(engine, call_id=self.id))

    def _before_reply(self, turn_id: int) -> None:
        pending, self._pending_voice = self._pending_voice, None
        session = self.session
        if pending is None or session is None or session.config is None:
            return
        name, cfg, tts_session = pending
        # CallSession reads its TTS session once per reply (the reply's resampler is built from its rate), so
        # switching here, before the reply's task runs, changes the voice exactly from this reply on.
        if session.speech is not None:
            session.speech.use_tts(cfg, tts_session)
        session.config.tts = cfg
        self.voice_name = name

    def _custom_data(self, cfg: SessionConfig) -> dict[str, Any]:
        headers = self.ws.headers
        return {
            "transport": "realtime",
            "session_id": self.id,
            "instructions": cfg.instructions.model_dump() if cfg.instructions else None,
            "voice": cfg.voice,
            "allow_recording": cfg.allow_recording,
            "user_agent": headers.get("user-agent"),
            "origin": headers.get("origin"),
        }

    def _adjust_config(self, config: AgentSessionConfig) -> AgentSessionConfig:
        """The agent's SessionConfig, with the session's voice and instructions (the latest ones) applied."""
        self._agent_tts = config.tts
        cfg = self.config
        assert cfg is not None
        name = self._next_voice()
        self._pending_voice = None
        self.voice_name = name
        if name is not None:
            config.tts = PiperTTS(voice=name)
        messages = [dict(m) for m in config.initial_messages]
        apply_instructions(messages, self._prompt())
        config.initial_messages = messages  # type: ignore[assignment]
        if self.recording is not None:
            self.recording.update_metadata(voice=name)
        return config

    def _start_session(self, cfg: SessionConfig) -> None:
        self.sink = RealtimeSink(self.emit, output_format=cfg.output_audio_format,
                                 chunk_ms=self.settings.realtime_chunk_ms, lead_ms=self.settings.realtime_lead_ms)
        session_ref: list[CallSession] = []
        self.events = ConversationEvents(
            self.emit,
            history=lambda: session_ref[0].history if session_ref else [],
            voice=lambda: self.voice_name,
            text_sink=self.sink,
            before_reply=self._before_reply,
        )
        session = CallSession(
            runtime=self.runtime,
            agent=self.runtime.agent,
            call_id=self.id,
            custom_data=self._custom_data(cfg),
            sink=self.sink,
            close=self._close_from_session,
            input_rate=PIPELINE_RATE,
            observer=self.events,
            adjust_config=self._adjust_config,
        )
        session_ref.append(session)
        self.session = session
        self.runtime.register(session)
        session.start()
        log.info("realtime %s: session started (voice %s, agent %s)", self.id, cfg.voice, self.runtime.agent.id)


async def realtime_endpoint(ws: WebSocket) -> None:
    await RealtimeConnection(ws, ws.app.state.runtime, ws.app.state.settings).run()
