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

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..pipeline.call import CallSession
from ..recording import ANONYMIZED_AUDIO, anonymize_client_event
from ..session import SessionConfig as AgentSessionConfig
from .audio_formats import InputAudio, choose_formats
from .instructions import TYPED_CLASSES
from .protocol import (
    FORMAT_RATES,
    ErrorEvent,
    ErrorInfo,
    InputAudioBufferAppend,
    InputAudioBufferCommit,
    ResponseCreate,
    ServerEvent,
    SessionConfig,
    SessionUpdate,
    SessionUpdated,
    TurnEvent,
    fatal,
    invalid_request,
    parse_client_event,
    warning,
)
from .sink import RealtimeSink
from .unmute_events import UNMUTE_SERVER_EVENTS, ChatEvents
from .voice import SessionVoice

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
        self.events: ChatEvents | None = None
        self.voice = SessionVoice(runtime, self.id)  # the client's voice, switched in between replies
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._sender: asyncio.Task | None = None
        self._update_lock = asyncio.Lock()
        self.audio_in = InputAudio(PIPELINE_RATE)
        self._bad_audio_warned = False
        self.unmute_style = False  # Opus or typed instructions: only Unmute's events, plus its chat history
        self._prompt_text: str | None = None  # the instructions' system prompt (random parts drawn once per update)
        self._early_audio_warned = False
        self.closed = False
        self._lease: Any = None  # concurrent-session slots (telebridge.security), released at cleanup
        self._expiry: asyncio.TimerHandle | None = None
        self._closing: asyncio.Future | None = None
        self.recording = runtime.recorder.session(self.id, transport="realtime", agent=runtime.agent.id)

    # --- output ---------------------------------------------------------------------------------------------
    def emit(self, event: ServerEvent) -> None:
        """Queue a server event (in order) and record it. Synchronous: the sink and observer call it."""
        if self.closed or (self.unmute_style and event.type not in UNMUTE_SERVER_EVENTS):
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
        await self._close_with(fatal(reason), code, reason)

    async def close_policy(self, code: str, message: str) -> None:
        """A limit ends (or refuses) the session: an ``invalid_request_error`` naming it, then close 1008."""
        await self._close_with(ErrorEvent(error=ErrorInfo(type="invalid_request_error", code=code, message=message)),
                               1008, message)

    async def _close_with(self, event: ErrorEvent, code: int, reason: str) -> None:
        if self.closed:
            return
        self.emit(event)
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
            refusal = await self._admit()
            if refusal is not None:
                log.info("realtime %s: refused: %s", self.id, refusal.code)
                await self.close_policy(refusal.code, refusal.message)
                return
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
            await self.runtime.state.voices.ensure_in(text)  # a voice cloned on another instance (REDIS_URL)
            try:
                event = parse_client_event(text, voices=self.runtime.voices)
            except ValidationError as exc:
                self.emit(invalid_request(exc))
                continue
            if isinstance(event, InputAudioBufferAppend):
                self._on_audio(event.audio)
            elif isinstance(event, SessionUpdate):
                await self._on_session_update(event)
            elif isinstance(event, TurnEvent):
                self._on_turn_event(event)

    async def _admit(self) -> Any:
        """Concurrency slots and the length limit (telebridge.security): None, or the Refusal to answer with."""
        from ..security import ACCESS_SCOPE_KEY, Refusal

        guard = getattr(self.ws.app.state, "guard", None)  # None: the access middleware did not run; fail closed
        admitted = (await guard.admit_session(self.ws.scope.get(ACCESS_SCOPE_KEY)) if guard is not None
                    else Refusal(401, "unauthorized", "not authorized"))
        if isinstance(admitted, Refusal):
            return admitted
        self._lease, seconds = admitted, guard.session_seconds()
        if seconds is not None:
            self._expiry = asyncio.get_running_loop().call_later(seconds, self._expire, seconds)
        return None

    def _expire(self, seconds: float) -> None:
        message = f"the session reached its maximum length of {seconds:g} s"
        self._closing = asyncio.ensure_future(self.close_policy("session_expired", message))

    async def _cleanup(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self._lease is not None:
            self._lease.release()
            self._lease = None
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

    def _record_client(self, event: SessionUpdate | TurnEvent) -> None:
        if self.recording is not None:
            self.recording.client(event.model_dump(mode="json", exclude_unset=True))  # as the client sent it

    def _record_audio(self, data: bytes, decoded: int) -> None:
        if self.recording is None:
            return
        fmt = self.audio_in.format
        if fmt == "opus":  # compressed: the samples decoded are the count
            event = {"type": ANONYMIZED_AUDIO, "number_of_samples": decoded, "sample_rate": FORMAT_RATES[fmt]}
        else:
            event = anonymize_client_event({"type": "input_audio_buffer.append", "audio": data},
                                           FORMAT_RATES[fmt], 2 if fmt == "pcm16" else 1)
        self.recording.client(event)

    # --- audio in -------------------------------------------------------------------------------------------
    def _formats(self) -> tuple[str, str]:
        cfg = self.config
        chosen = {k: getattr(cfg, k) for k in ("input_audio_format", "output_audio_format") if k in self.fields_set}
        return choose_formats(chosen, self.audio_in.sniffed, self._typed_instructions())

    def _typed_instructions(self) -> bool:
        return self.config is not None and isinstance(self.config.instructions, TYPED_CLASSES)

    def _apply_formats(self) -> None:
        fmt_in, fmt_out = self._formats()
        self.audio_in.use(fmt_in)
        if self.sink is not None:
            self.sink.set_output_format(fmt_out)
        self.unmute_style = self.unmute_style or self._typed_instructions() or "opus" in (fmt_in, fmt_out)

    def _on_audio(self, data: bytes) -> None:
        if self.audio_in.sniff_first(data, "input_audio_format" in self.fields_set):
            self._apply_formats()
        try:  # decoded even before the session starts: an Ogg stream's first pages carry its headers
            decoded, pcm = self.audio_in.decode(data)
        except ValueError as exc:
            if not self._bad_audio_warned:
                self._bad_audio_warned = True
                self.emit(ErrorEvent(error=ErrorInfo(
                    type="invalid_request_error", code="invalid_audio", param="audio",
                    message=f"Audio is not the session's {self.audio_in.format} stream: {exc}")))
            return
        self._record_audio(data, decoded)
        if self.session is None:
            if not self._early_audio_warned:
                self._early_audio_warned = True
                self.emit(warning("audio before the first session.update is ignored", code="session_not_configured"))
            return
        if len(pcm):
            self.session.on_audio(pcm)

    # --- turns driven by the client (OpenAI Realtime) -------------------------------------------------------
    def _on_turn_event(self, event: TurnEvent) -> None:
        """``input_audio_buffer.commit`` ends the user's turn, ``response.create`` asks for a reply,
        ``response.cancel`` stops one. Before the first ``session.update`` they do nothing."""
        self._record_client(event)
        session = self.session
        if session is None:
            return
        if isinstance(event, InputAudioBufferCommit):
            session.commit_user_turn()
        elif isinstance(event, ResponseCreate):
            session.request_reply()
        else:
            session.cancel_reply()

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
            if "instructions" in fields or self.config is None:
                self._prompt_text = merged.instructions.system_prompt() if merged.instructions else None
            if self.session is None:
                self.config = merged
                self.fields_set |= fields
                self._apply_formats()
                self.voice.name = self.voice.store_name(merged.voice)
                self._start_session(merged)
            else:
                if "voice" in fields and self.voice.store_name(merged.voice) != self.voice.next_name():
                    try:
                        await self.voice.prepare(self.voice.store_name(merged.voice),
                                                 self.sink.sample_rate if self.sink is not None else None)
                    except Exception as exc:
                        log.warning("realtime %s: voice %r unusable: %s", self.id, merged.voice, exc)
                        self.emit(ErrorEvent(error=ErrorInfo(
                            type="invalid_request_error", code="voice_unavailable", param="session.voice",
                            message=f"Voice {merged.voice!r} cannot be used: {exc}")))
                        return
                self.config = merged
                self.fields_set |= fields
                self._apply_formats()
                if self.session.config is not None:  # not yet configured: _adjust_config applies them
                    apply_instructions(self.session.history, self._prompt())
            if self.recording is not None:
                self.recording.update_metadata(voice=self.voice.next_name(), audio_format=self._formats()[1])
            echo = merged.echo()
            for key in ("input_audio_format", "output_audio_format"):
                if key in self.fields_set:
                    echo[key] = getattr(merged, key)
            self.emit(SessionUpdated(session=echo))

    def _prompt(self) -> str | None:
        return self._prompt_text

    def _custom_data(self, cfg: SessionConfig) -> dict[str, Any]:
        headers = self.ws.headers
        return {
            "transport": "realtime",
            "session_id": self.id,
            "instructions": cfg.instructions.model_dump() if cfg.instructions else None,
            "voice": self.voice.store_name(cfg.voice),
            "allow_recording": cfg.allow_recording,
            "user_agent": headers.get("user-agent"),
            "origin": headers.get("origin"),
        }

    def _adjust_config(self, config: AgentSessionConfig) -> AgentSessionConfig:
        """The agent's SessionConfig, with the session's voice and instructions (the latest ones) applied."""
        assert self.config is not None
        name = self.voice.agent_configured(config)
        messages = [dict(m) for m in config.initial_messages]
        apply_instructions(messages, self._prompt())
        config.initial_messages = messages  # type: ignore[assignment]
        if self.recording is not None:
            self.recording.update_metadata(voice=name)
        return config

    def _start_session(self, cfg: SessionConfig) -> None:
        self.sink = RealtimeSink(self.emit, output_format=self._formats()[1],
                                 chunk_ms=self.settings.realtime_chunk_ms, lead_ms=self.settings.realtime_lead_ms)
        session_ref: list[CallSession] = []
        self.events = ChatEvents(
            self.emit,
            enabled=lambda: self.unmute_style,
            history=lambda: session_ref[0].history if session_ref else [],
            voice=lambda: self.voice.response_voice(self.config),
            text_sink=self.sink,
            before_reply=lambda turn_id: self.voice.before_reply(self.session),
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
