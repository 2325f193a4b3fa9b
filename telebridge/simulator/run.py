"""Running one Media Stream end to end, shared by inbound and outbound simulated calls: synthesize the script,
open the signed WebSocket the TwiML named, drive :class:`~.stream.StreamSession`, collect a :class:`SimulatedCall`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from .constants import RATE, FloatArray
from .results import SimulatedCall, StreamRejected, TimelineEvent, agent_segments_from_audio
from .script import Action, LineEcho, Play, Say
from .speech import _default_stt, _transcribe_8k, say_audio
from .stream import CallHandle, StreamSession, TwilioApiHook
from .twiml import StreamTarget, _dial_url, _signature

if TYPE_CHECKING:
    from telebridge.providers.stt.whisper import WhisperSTT
    from telebridge.providers.tts.piper import PiperTTS

__all__ = ["prepare_audio", "open_stream", "run_stream"]


async def prepare_audio(script: Sequence[Action], tts: PiperTTS | None = None) -> dict[int, FloatArray]:
    """Every Say synthesized (and Play taken) before dialling, so model time never disturbs the 20 ms clock."""
    audio: dict[int, FloatArray] = {}
    for i, action in enumerate(script):
        if isinstance(action, Say):
            audio[i] = await say_audio(action.text, tts)
        elif isinstance(action, Play):
            audio[i] = action.audio
    return audio


async def open_stream(url: str, target: StreamTarget, auth_token: str | None, timeout: float) -> ClientConnection:
    """The WebSocket Twilio opens for ``<Connect><Stream>``, upgrade signed over the URL the TwiML named."""
    headers: dict[str, str] = {}
    if auth_token:
        headers["X-Twilio-Signature"] = _signature(target.url, {}, auth_token)
    try:
        return await connect(
            _dial_url(url, target.url),
            additional_headers=headers,
            user_agent_header="Twilio.TmeWs/1.0",
            compression=None,
            max_size=16 * 1024 * 1024,
            ping_interval=None,
            open_timeout=timeout,
            proxy=None,
        )
    except InvalidStatus as exc:
        body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
        raise StreamRejected(exc.response.status_code, body) from None


async def run_stream(
    ws: ClientConnection,
    *,
    twiml: str,
    target: StreamTarget,
    call_sid: str,
    stream_sid: str,
    account_sid: str,
    script: Sequence[Action],
    audio: Mapping[int, FloatArray],
    start_params: Mapping[str, str],
    duration: float,
    end_when_quiet: float | None,
    realtime: bool,
    transcribe: bool,
    stt: WhisperSTT | None = None,
    echo: LineEcho | None = None,
    line_noise_dbfs: float | None = None,
    noise_seed: int = 0,
    twilio_api: TwilioApiHook | None = None,
    during: Callable[[StreamSession], Awaitable[None]] | None = None,
) -> SimulatedCall:
    """Drive the stream until it ends; ``during`` runs alongside (e.g. Twilio's AMD verdict) and is cancelled."""
    session = StreamSession(
        ws,
        stream_sid=stream_sid,
        call_sid=call_sid,
        account_sid=account_sid,
        script=script,
        audio=audio,
        duration=duration,
        end_when_quiet=end_when_quiet,
        realtime=realtime,
        custom_parameters=start_params,
        echo=echo,
        line_noise_dbfs=line_noise_dbfs,
        noise_seed=noise_seed,
    )
    if twilio_api is not None:
        twilio_api.call_started(CallHandle(call_sid, account_sid, asyncio.get_running_loop(), session))
    side = asyncio.create_task(during(session)) if during is not None else None
    try:
        await session.run()
    finally:
        if side is not None:
            side.cancel()
            await asyncio.gather(side, return_exceptions=True)
        if twilio_api is not None:
            twilio_api.call_ended(call_sid)
        if ws.close_code is None:
            await ws.close()

    heard = np.concatenate(session.heard) if session.heard else np.zeros(0, np.float32)
    sent = np.concatenate(session.sent) if session.sent else np.zeros(0, np.float32)
    events = sorted(session.events, key=lambda e: e.t)
    segments = agent_segments_from_audio(heard)
    if transcribe:
        stt = stt or _default_stt()
        pad = int(0.1 * RATE)
        segments = [
            replace(seg, text=await _transcribe_8k(
                stt, heard[max(0, int(seg.start * RATE) - pad) : int(seg.end * RATE) + pad]
            ))
            for seg in segments
        ]
        events = await _transcribe_plays(events, script, audio, stt)
    return SimulatedCall(
        call_sid=call_sid,
        stream_sid=stream_sid,
        account_sid=account_sid,
        twiml=twiml,
        heard=heard,
        sent=sent,
        events=events,
        agent_segments=segments,
        protocol_errors=session.protocol_errors,
        warnings=list(target.warnings),
        close_code=ws.close_code,
        close_reason=ws.close_reason or "",
        ended_by=session.ended_by,
        stream_url=target.url,
        custom_parameters=dict(start_params),
        max_tick_lateness=session.max_lateness,
        caller_audio=np.concatenate(session.caller_clean) if session.caller_clean else np.zeros(0, np.float32),
        redirect_twiml=session.rest[1] if session.rest is not None else None,
        agent_samples_played=session.buffer.played_samples,
    )


async def _transcribe_plays(
    events: list[TimelineEvent], script: Sequence[Action], audio: Mapping[int, FloatArray], stt: WhisperSTT
) -> list[TimelineEvent]:
    """Fill in the text of ``play`` events whose Play had no known transcript (play events fire in order)."""
    plays = [(i, a) for i, a in enumerate(script) if isinstance(a, Play)]
    out: list[TimelineEvent] = []
    k = 0
    for ev in events:
        if ev.kind == "play" and ev.side == "caller" and k < len(plays):
            i, action = plays[k]
            k += 1
            if action.text is None:
                ev = replace(ev, text=await _transcribe_8k(stt, audio[i]))
        out.append(ev)
    return out
