"""The Media Streams WebSocket: validates the upgrade, decodes frames, and hands them to the call."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..outbound.streams import finish_stream_call, prepare_stream_call
from ..pipeline.call import PHONE_RATE, CallSession
from ..pipeline.outbound import OutboundAudio
from ..realtime.phone import phone_recording
from ..session import SessionConfig
from ..websocket import DIRECT
from .stream import (
    DtmfEvent,
    MarkEvent,
    MediaEvent,
    ProtocolIssue,
    StartEvent,
    StopEvent,
    StreamDecoder,
)
from .transfer import WHISPER_PATH
from .webhook import external_url, signature_ok

if TYPE_CHECKING:
    from ..recording import SessionRecording
    from ..settings import Settings

log = logging.getLogger("telebridge.media")

MAX_ISSUE_LOGS = 5  # per call; after that only counters grow
EVENT = "telebridge.event"  # in a message the receiver queued: the frame, decoded already
_UNDECODED = object()


def phone_defaults(config: SessionConfig) -> SessionConfig:
    """Phone audio is 8 kHz: run Silero at 8 kHz unless the agent asked for a rate explicitly.

    Upsampling to 16 kHz adds no information to a phone line, but costs a resampler pass per frame and a
    bigger VAD model per window (about 1.3 ms CPU per call-second together at 50 calls). Utterances are still
    resampled to 16 kHz for speech-to-text.
    """
    if "sample_rate" in config.vad.model_fields_set:
        return config
    return config.model_copy(update={"vad": config.vad.model_copy(update={"sample_rate": PHONE_RATE})})


def _compose(*steps: Callable[[SessionConfig], SessionConfig] | None) -> Callable[[SessionConfig], SessionConfig]:
    def adjust(config: SessionConfig) -> SessionConfig:
        for step in steps:
            if step is not None:
                config = step(config)
        return config

    return adjust


def _whisper_endpoint(ws: WebSocket, settings: Settings) -> str | None:
    """Where Twilio reaches our transfer whisper: the public base URL, else the host this stream came in on."""
    try:
        return external_url(ws, settings, WHISPER_PATH)
    except ValueError:
        return None


async def media_stream(ws: WebSocket) -> None:
    settings: Settings = ws.app.state.settings
    runtime = ws.app.state.runtime
    if not signature_ok(ws, settings, {}, websocket=True):
        log.warning("rejected media stream upgrade: bad or missing X-Twilio-Signature")
        await ws.close(code=1008)  # before accept(): the client gets HTTP 403
        return
    await ws.accept()
    decoder = StreamDecoder()
    session: CallSession | None = None
    sink: OutboundAudio | None = None
    recording: SessionRecording | None = None
    tap: Any = None  # the console's listen-in, while the call is recorded with consent
    issues_logged = 0
    # The ASGI receive itself, not Starlette's WebSocket.receive (a state check per frame): after accept() the
    # messages are websocket.receive until a websocket.disconnect, which ends the loop; nothing reads after it.
    # (A private attribute: should a Starlette release drop it, the public receive gives the same messages.)
    receive = getattr(ws, "_receive", None) or ws.receive

    # Where the server offers it (telebridge.websocket), frames are taken as they are parsed, without the ASGI
    # queue and a task switch each (see receiver() below), and the call's own messages (media, marks, clears: 25 a
    # second while the agent talks) are sent without an ASGI message each.
    direct = ws.scope.get("extensions", {}).get(DIRECT)
    # Elsewhere the ASGI send, not Starlette's state checks per message. A send that fails fails all the same
    # (OSError, or uvicorn's error after a close): the sender takes any failure as the end of the call.
    raw_send = getattr(ws, "_send", None)

    async def asgi_send(text: str) -> None:
        if raw_send is None:
            await ws.send_text(text)
        else:
            await raw_send({"type": "websocket.send", "text": text})

    send: Callable[[str], Awaitable[None]] = direct["send_text"] if direct is not None else asgi_send

    async def close(code: int, reason: str) -> None:
        if decoder.call_sid:
            runtime.stream_outcomes[decoder.call_sid] = "completed" if code == 1000 else "failed"
        try:
            await ws.close(code=code, reason=reason)
        except Exception:  # already closed
            pass

    def take(event: Any) -> bool:
        """Handle a decoded frame that needs no waiting (all but ``start`` and ``stop``): whether it did."""
        nonlocal issues_logged
        if type(event) is MediaEvent:  # a media frame the hot path left to pydantic, accepted
            event = event.payload
        if type(event) is bytes:  # an accepted media frame's μ-law payload (the hot path)
            if session is not None:
                session.on_ulaw(event)
                if recording is not None:
                    recording.client_audio(len(event), 8000)
                if tap is not None:
                    tap.caller(event)
        elif isinstance(event, MarkEvent):
            if sink is not None:
                sink.mark_echoed(event.name)
        elif isinstance(event, DtmfEvent):
            if session is not None:
                session.on_dtmf(event.digit)
        elif isinstance(event, ProtocolIssue):
            if issues_logged < MAX_ISSUE_LOGS:
                issues_logged += 1
                log.warning("media stream %s: %s (%s)", decoder.stream_sid or "?", event.kind, event.detail)
        else:
            return False
        return True

    # With the extension, the receiver takes every frame but ``start`` and ``stop``, which go to the loop below
    # decoded. The server asks it only while nothing is queued (what comes meanwhile is queued behind, in order),
    # and the loop handles all but a ``start`` without waiting; while it waits on one (the agent loading) or after
    # a ``stop``, the receiver leaves every frame to the queue: none is taken before the call exists.
    waiting = False

    def receiver(text: str) -> dict[str, Any] | None:
        if waiting:
            return {"type": "websocket.receive", "text": text}
        event = decoder.receive_audio(text)
        if take(event):
            return None
        return {"type": "websocket.receive", "text": text, EVENT: event}

    if direct is not None:
        direct["set_receiver"](receiver)

    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
            event = message.get(EVENT, _UNDECODED)
            if event is _UNDECODED:
                frame = message.get("text")
                if frame is None:
                    frame = message.get("bytes") or b""
                event = decoder.receive_audio(frame)
            if take(event):
                pass
            elif isinstance(event, StartEvent):
                waiting = True
                info = event.start
                try:  # outbound calls: data from where it cannot be forged, maybe their own agent
                    prepared = await prepare_stream_call(runtime, settings, info.call_sid, info.stream_sid,
                                                         info.account_sid, dict(info.custom_parameters))
                except Exception as exc:
                    log.error("call %s: cannot start: %s", info.call_sid, exc)
                    await close(1011, "agent failed to load")
                    break
                custom = prepared.custom_data
                sink = OutboundAudio(info.stream_sid, send, chunk_ms=settings.outbound_chunk_ms,
                                     lead_ms=settings.outbound_lead_ms)
                call_id = info.call_sid or f"local-{uuid.uuid4().hex[:12]}"
                call_sink: Any = sink
                observer = adjust = None
                if runtime.recorder.enabled:  # records only if the agent consents (session_data["allow_recording"])
                    hooks = phone_recording(runtime, sink, call_id=call_id, call_sid=info.call_sid,
                                            stream_sid=info.stream_sid)
                    if hooks is not None:
                        recording, call_sink, observer, adjust = hooks
                        consented = recording
                        tap = sink.tap = runtime.console.open_tap(call_id, consent=lambda: consented.active)
                session = CallSession(
                    runtime=runtime,
                    agent=prepared.agent,
                    call_id=call_id,
                    custom_data=custom,
                    sink=call_sink,
                    close=close,
                    observer=observer,
                    adjust_config=_compose(phone_defaults, adjust),
                    whisper_endpoint=_whisper_endpoint(ws, settings),
                )
                runtime.register(session)
                session.start()
                log.info("call %s: stream %s started", session.call_id, info.stream_sid)
                waiting = False
            elif isinstance(event, StopEvent):
                waiting = True  # (nothing after the stop is the call's)
                break
    except WebSocketDisconnect:
        pass
    finally:
        if direct is not None:
            direct["set_receiver"](None)
        if session is not None:
            runtime.console.close_tap(session.call_id)
            await session.aclose()
            runtime.unregister(session)
            await finish_stream_call(runtime, session)
            if recording is not None:
                recording.close()
            log.info("call %s: ended (%d frames, %d protocol issues)", session.call_id, decoder.stats.frames,
                     sum(decoder.stats.issues.values()))
        else:
            log.info("media stream closed before start (%d frames)", decoder.stats.frames)
