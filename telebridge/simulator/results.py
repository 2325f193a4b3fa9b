"""What a simulated call produced (:class:`SimulatedCall`), how it failed (:class:`SimulatorError` and kin),
and how to read it: agent speech bursts from the heard audio, and a timed transcript of both sides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .constants import FRAME, RATE, SEGMENT_GAP, SPEECH_RMS, TICK, FloatArray, Side

__all__ = [
    "TimelineEvent", "AgentSegment", "SimulatedCall", "SimulatorError", "WebhookRejected", "NoStreamInTwiml",
    "StreamRejected", "agent_segments_from_audio", "format_transcript",
]


@dataclass(frozen=True)
class TimelineEvent:
    """Something that happened, in seconds since the stream started."""

    t: float
    side: Side
    kind: str
    text: str = ""


@dataclass(frozen=True)
class AgentSegment:
    """One burst of agent speech as heard by the caller."""

    start: float
    end: float
    text: str = ""


@dataclass
class SimulatedCall:
    """Everything one simulated call produced; ``heard`` and ``sent`` share the 8 kHz stream timeline."""

    call_sid: str
    stream_sid: str
    account_sid: str
    twiml: str
    heard: FloatArray
    sent: FloatArray
    events: list[TimelineEvent] = field(default_factory=list)
    agent_segments: list[AgentSegment] = field(default_factory=list)
    protocol_errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Things real Twilio would object to that did not stop the simulation (e.g. a ws:// stream URL)."""
    close_code: int | None = None
    close_reason: str = ""
    ended_by: Literal["hangup", "duration", "quiet", "server", "rest"] = "hangup"
    stream_url: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)
    max_tick_lateness: float = 0.0
    """Worst delay of a 20 ms tick behind its deadline (real time only): how faithful the pacing was."""
    caller_audio: FloatArray = field(default_factory=lambda: np.zeros(0, np.float32))
    """The caller's own sound (script audio) on the same timeline, without the line's echo and noise."""
    redirect_twiml: str | None = None
    """TwiML a REST update told Twilio to run instead of the stream (e.g. a transfer's ``<Dial>``)."""
    agent_samples_played: int = 0
    """Server audio the caller heard (silence padding excluded), in samples."""

    @property
    def duration(self) -> float:
        return len(self.heard) / RATE

    def events_of(self, kind: str) -> list[TimelineEvent]:
        return [e for e in self.events if e.kind == kind]

    @property
    def agent_dtmf(self) -> str:
        """The keys the agent pressed, in order, as decoded from the audio the caller heard."""
        return "".join(e.text for e in self.events if e.side == "agent" and e.kind == "dtmf")


class SimulatorError(Exception):
    """The call could not be set up the way Twilio would set it up."""


class WebhookRejected(SimulatorError):
    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"webhook answered HTTP {status_code}: {body[:200]}")
        self.status_code = status_code
        self.body = body


class NoStreamInTwiml(SimulatorError):
    def __init__(self, twiml: str, why: str) -> None:
        super().__init__(f"{why}; TwiML was: {twiml[:300]}")
        self.twiml = twiml


class StreamRejected(SimulatorError):
    """The WebSocket upgrade was refused (e.g. 403 for a bad signature)."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"stream upgrade refused with HTTP {status_code}: {body[:200]}")
        self.status_code = status_code
        self.body = body


def _frame_rms(audio: FloatArray) -> FloatArray:
    n = len(audio) // FRAME
    frames = audio[: n * FRAME].reshape(n, FRAME).astype(np.float64)
    return np.sqrt(np.mean(frames * frames, axis=1)).astype(np.float32)


def agent_segments_from_audio(heard: FloatArray, *, gap: float = SEGMENT_GAP) -> list[AgentSegment]:
    """Split heard audio into speech bursts: 20 ms frames above :data:`SPEECH_RMS`, merged across gaps < ``gap``."""
    loud = np.flatnonzero(_frame_rms(heard) > SPEECH_RMS)
    if loud.size == 0:
        return []
    max_gap_frames = int(round(gap / TICK))
    segments: list[AgentSegment] = []
    start = prev = int(loud[0])
    for idx in loud[1:]:
        i = int(idx)
        if i - prev - 1 >= max_gap_frames:
            segments.append(AgentSegment(start * TICK, (prev + 1) * TICK))
            start = i
        prev = i
    segments.append(AgentSegment(start * TICK, (prev + 1) * TICK))
    return segments


def format_transcript(call: SimulatedCall) -> str:
    """Both sides on one timeline: ``[  0.42] agent: Hi, thanks for calling …``."""
    rows: list[tuple[float, int, str]] = []
    for seg in call.agent_segments:
        text = seg.text or f"<speech, {seg.end - seg.start:.1f} s>"
        rows.append((seg.start, 1, f"agent: {text}"))
    for ev in call.events:
        if ev.side == "caller":
            line = {
                "say": f"caller: {ev.text}",
                "play": f"caller: {ev.text or '<audio>'}",
                "dtmf": f"caller: [presses {ev.text}]",
                "hangup": f"caller: [hangs up{': ' + ev.text if ev.text else ''}]",
            }.get(ev.kind)
        elif ev.kind == "dtmf" and ev.side == "agent":
            line = f"agent: [presses {ev.text}]"
        elif ev.kind == "clear":
            line = f"agent: [clear: {ev.text}]"
        elif ev.kind == "close":
            line = f"agent: [server closed the stream: {ev.text}]"
        elif ev.kind == "protocol-error":
            line = f"twilio: [protocol error {ev.text}]"
        else:
            line = None
        if line is not None:
            rows.append((ev.t, 0, line))
    rows.sort(key=lambda r: (r[0], r[1]))
    return "\n".join(f"[{t:6.2f}] {line}" for t, _, line in rows)
