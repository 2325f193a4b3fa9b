"""A phone call without a phone: plays Twilio's and the caller's part against a running telebridge server.

Why this exists
---------------
Trying a voice agent should not need a Twilio account, a public URL and a handset, and the end-to-end tests need
a Twilio that is strict, observable and repeatable. :func:`simulate_call` does what Twilio does on an inbound
call:

1. POSTs the Voice webhook, form-encoded and signed (``X-Twilio-Signature``) exactly as Twilio does;
2. reads ``<Connect><Stream url=…>`` from the TwiML and opens the WebSocket with the upgrade signed over the
   URL the TwiML named (the server may advertise its public ``wss://`` URL; we dial the same path on the
   host we were given);
3. sends ``connected`` and ``start``, then a 20 ms μ-law ``media`` frame every 20 ms against absolute
   deadlines, silence included, because a real phone line never stops streaming;
4. decodes every server frame as strictly as Twilio (extra keys, wrong streamSid, binary frames are recorded
   as protocol errors), and plays server audio through :class:`~telebridge.playback.PlaybackBuffer`, which
   echoes marks when playback reaches them and all pending marks at once on ``clear``;
5. sends ``stop`` and closes on hang-up or when ``duration`` runs out.

The caller follows a script (:class:`Say`, :class:`Play`, :class:`Dtmf`, :class:`Hangup`). The script runs in
order; ``at`` is the earliest time an action may fire and ``after_agent_quiet`` makes it wait until the agent
has spoken since the caller's previous action and then been silent that long — "greeting, question, answer"
without guessing latencies. ``after_agent_speech`` fires once the caller has heard that many seconds of agent
audio since their previous action: barge-ins and backchannels land mid-reply, whatever the reply's latency.

The line can be made realistic: ``echo`` (a :class:`LineEcho`: the caller's microphone picks up what they hear,
attenuated and delayed, as a speakerphone or a poor hybrid does), ``line_noise_dbfs`` (steady noise under
everything the caller sends) and :func:`noise_burst` (a cough-like burst to :class:`Play`). With ``twilio_api``
(a :class:`TwilioApiHook`, e.g. a local fake of Twilio's REST API) the call can be hung up or redirected the way
Twilio does it after a REST update: ``stop`` on the stream, then the socket closes. The result (:class:`SimulatedCall`) holds what the caller heard and sent on one
8 kHz timeline, a timeline of events, the agent's speech bursts (transcribed with Whisper if asked) and every
protocol error.

Time model: tick ``i`` covers ``[i·20 ms, (i+1)·20 ms)``. At its end the buffer plays that interval (so a mark
is echoed exactly when the audio before it has finished), the caller's 160 samples for it are sent (chunk
``i+1``, timestamp ``i·20``), then the script is evaluated; audio an action queues starts with the next tick.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from telebridge.audio.g711 import ulaw_decode_float, ulaw_encode
from telebridge.playback import PlaybackBuffer
from telebridge.twilio.stream import (
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

if TYPE_CHECKING:
    from telebridge.providers.stt.whisper import WhisperSTT
    from telebridge.providers.tts.piper import PiperTTS

__all__ = [
    "Say",
    "Play",
    "Dtmf",
    "Hangup",
    "Action",
    "LineEcho",
    "noise_burst",
    "CallHandle",
    "TwilioApiHook",
    "TimelineEvent",
    "AgentSegment",
    "SimulatedCall",
    "SimulatorError",
    "WebhookRejected",
    "NoStreamInTwiml",
    "StreamRejected",
    "StreamTarget",
    "parse_twiml",
    "agent_segments_from_audio",
    "simulate_call",
    "format_transcript",
    "add_simulate_arguments",
    "run_simulate",
]

RATE: Final = 8000
TICK: Final = 0.02
FRAME: Final = 160
SPEECH_RMS: Final = 10 ** (-45 / 20)
"""A 20 ms frame louder than −45 dBFS counts as agent speech (μ-law idle noise and TTS tails sit well below)."""
SEGMENT_GAP: Final = 0.4
"""Agent speech separated by at least this much silence is two segments."""
_DTMF_DIGITS: Final = frozenset("0123456789*#")
_EPS: Final = 1e-9

Side: TypeAlias = Literal["caller", "agent", "twilio"]
FloatArray: TypeAlias = npt.NDArray[np.float32]


# ---------------------------------------------------------------------------------------------------------------
# The caller's script
# ---------------------------------------------------------------------------------------------------------------


def _check_timing(at: float | None, after_agent_quiet: float | None, after_agent_speech: float | None = None) -> None:
    if at is not None and not (math.isfinite(at) and at >= 0):
        raise ValueError(f"at must be a finite time >= 0, got {at!r}")
    if after_agent_quiet is not None and not (math.isfinite(after_agent_quiet) and after_agent_quiet > 0):
        raise ValueError(f"after_agent_quiet must be > 0 seconds, got {after_agent_quiet!r}")
    if after_agent_speech is not None and not (math.isfinite(after_agent_speech) and after_agent_speech > 0):
        raise ValueError(f"after_agent_speech must be > 0 seconds, got {after_agent_speech!r}")
    if after_agent_quiet is not None and after_agent_speech is not None:
        raise ValueError("use after_agent_quiet or after_agent_speech, not both")


@dataclass(frozen=True)
class Say:
    """Speak ``text`` (synthesized with Piper, sent as 8 kHz μ-law)."""

    at: float | None
    text: str
    after_agent_quiet: float | None = None
    after_agent_speech: float | None = None

    def __post_init__(self) -> None:
        _check_timing(self.at, self.after_agent_quiet, self.after_agent_speech)
        if not self.text.strip():
            raise ValueError("Say needs some text")


@dataclass(frozen=True, eq=False)
class Play:
    """Send recorded audio (8 kHz float32 mono). ``text``, if known, is its transcript (otherwise Whisper's)."""

    at: float | None
    audio: FloatArray
    after_agent_quiet: float | None = None
    text: str | None = None
    after_agent_speech: float | None = None

    def __post_init__(self) -> None:
        _check_timing(self.at, self.after_agent_quiet, self.after_agent_speech)
        arr = np.asarray(self.audio, dtype=np.float32)
        if arr.ndim != 1:
            raise ValueError("Play audio must be mono (1-D)")
        object.__setattr__(self, "audio", arr)


@dataclass(frozen=True)
class Dtmf:
    """Press a key (Twilio sends a ``dtmf`` event)."""

    at: float | None
    digit: str
    after_agent_quiet: float | None = None
    after_agent_speech: float | None = None

    def __post_init__(self) -> None:
        _check_timing(self.at, self.after_agent_quiet, self.after_agent_speech)
        if len(self.digit) != 1 or self.digit not in _DTMF_DIGITS:
            raise ValueError(f"DTMF digit must be one of 0-9 * #, got {self.digit!r}")


@dataclass(frozen=True)
class Hangup:
    """Hang up: Twilio sends ``stop`` and closes the socket."""

    at: float | None = None
    after_agent_quiet: float | None = None
    after_agent_speech: float | None = None

    def __post_init__(self) -> None:
        _check_timing(self.at, self.after_agent_quiet, self.after_agent_speech)


Action: TypeAlias = Say | Play | Dtmf | Hangup


@dataclass(frozen=True)
class LineEcho:
    """The caller's line echoes what they hear back to the server: ``gain_db`` down, ``delay`` seconds late."""

    gain_db: float = -20.0
    delay: float = 0.2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gain_db) and self.gain_db <= 0):
            raise ValueError(f"gain_db must be <= 0, got {self.gain_db!r}")
        if not (0 <= self.delay <= 2.0):
            raise ValueError(f"delay must be within 0..2 s, got {self.delay!r}")


def noise_burst(
    duration: float = 0.3, dbfs: float = -12.0, *, seed: int = 0, rate: int = RATE, voiced: bool = False
) -> FloatArray:
    """A cough-like burst: band-limited noise (or a breathy 120 Hz buzz) with a sharp attack and fast decay.

    Peak level ``dbfs``; ``duration`` seconds. Speech detectors mostly (and rightly) ignore it; it is the
    "caller coughs over the agent" of the scenario suite.
    """
    from scipy.signal import butter, lfilter

    rng = np.random.default_rng(seed)
    n = max(1, int(duration * rate))
    t = np.arange(n) / rate
    x = rng.standard_normal(n)
    if voiced:
        pulses = np.zeros(n)
        pulses[:: max(1, rate // 120)] = 8.0
        x = pulses + x
    b, a = butter(2, [250 / (rate / 2), min(3000 / (rate / 2), 0.99)], "band")
    x = lfilter(b, a, x)
    x *= (1 - np.exp(-t / 0.006)) * np.exp(-t / max(duration / 3, 1e-3))
    peak = float(np.max(np.abs(x))) or 1.0
    return (x / peak * 10 ** (dbfs / 20)).astype(np.float32)


class CallHandle:
    """Twilio's control over one live simulated call: what a REST update does to it. Thread-safe."""

    def __init__(self, call_sid: str, account_sid: str, loop: asyncio.AbstractEventLoop, session: _Session) -> None:
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


# ---------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# TwiML and URLs
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamTarget:
    """What ``<Connect><Stream>`` asked for."""

    url: str
    parameters: dict[str, str]
    warnings: tuple[str, ...] = ()


def parse_twiml(twiml: str) -> StreamTarget:
    """Find ``<Connect><Stream url>`` and its ``<Parameter>``s; raise :class:`NoStreamInTwiml` otherwise."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise NoStreamInTwiml(twiml, f"TwiML is not well-formed XML ({exc})") from None
    if root.tag != "Response":
        raise NoStreamInTwiml(twiml, f"TwiML root is <{root.tag}>, not <Response>")
    stream = root.find("./Connect/Stream")
    if stream is None:
        why = (
            "TwiML has <Start><Stream> (receive-only), not <Connect><Stream>"
            if root.find("./Start/Stream") is not None
            else "TwiML has no <Connect><Stream>"
        )
        raise NoStreamInTwiml(twiml, why)
    url = stream.get("url")
    if not url:
        raise NoStreamInTwiml(twiml, "<Stream> has no url")
    params: dict[str, str] = {}
    for p in stream.findall("./Parameter"):
        name = p.get("name")
        if name is not None:
            params[name] = p.get("value", "")
    warnings: list[str] = []
    parts = urlsplit(url)
    if parts.scheme != "wss":
        warnings.append(f"Stream url must be wss:// for Twilio, got {url!r}")
    if parts.query:
        warnings.append(f"Stream url must not carry a query string (use <Parameter>), got {url!r}")
    return StreamTarget(url=url, parameters=params, warnings=tuple(warnings))


def _dial_url(server_url: str, advertised: str) -> str:
    """The advertised stream path (and query) on the host we can actually reach, http(s) mapped to ws(s)."""
    server = urlsplit(server_url)
    adv = urlsplit(advertised)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(server.scheme)
    if scheme is None:
        raise SimulatorError(f"server url must be http(s) or ws(s), got {server_url!r}")
    return urlunsplit((scheme, server.netloc, adv.path or "/", adv.query, ""))


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _webhook_form(
    *, account_sid: str, call_sid: str, from_number: str, to_number: str, extra: Mapping[str, str]
) -> dict[str, str]:
    """The fields Twilio POSTs for an inbound call (geography made up, but shaped like Twilio's)."""
    form = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to_number,
        "CalledCity": "SAN FRANCISCO",
        "CalledCountry": "US",
        "CalledState": "CA",
        "CalledZip": "94105",
        "Caller": from_number,
        "CallerCity": "OAKLAND",
        "CallerCountry": "US",
        "CallerState": "CA",
        "CallerZip": "94612",
        "Direction": "inbound",
        "From": from_number,
        "FromCity": "OAKLAND",
        "FromCountry": "US",
        "FromState": "CA",
        "FromZip": "94612",
        "To": to_number,
        "ToCity": "SAN FRANCISCO",
        "ToCountry": "US",
        "ToState": "CA",
        "ToZip": "94105",
    }
    form.update({str(k): str(v) for k, v in extra.items()})
    return form


def _signature(url: str, params: Mapping[str, str] | None, auth_token: str) -> str:
    from telebridge.twilio.signature import compute_signature

    return compute_signature(url, params, auth_token)


# ---------------------------------------------------------------------------------------------------------------
# Speech models (lazy: offline tests with transcribe=False and no Say never load them)
# ---------------------------------------------------------------------------------------------------------------

_tts_singleton: PiperTTS | None = None
_stt_singleton: WhisperSTT | None = None
_say_cache: dict[str, FloatArray] = {}


def _default_tts() -> PiperTTS:
    """One Piper voice per process; loading it costs more than a short call."""
    global _tts_singleton
    if _tts_singleton is None:
        from telebridge.inference import InferencePool
        from telebridge.providers.tts.piper import PiperTTS

        # Noise off: the same text always gives the same audio, so simulated calls are repeatable.
        _tts_singleton = PiperTTS(
            pool=InferencePool("simulator-tts", max_workers=1, max_pending=64), noise_scale=0.0, noise_w_scale=0.0
        )
    return _tts_singleton


def _default_stt() -> WhisperSTT:
    global _stt_singleton
    if _stt_singleton is None:
        from telebridge.inference import InferencePool
        from telebridge.providers.stt.whisper import WhisperSTT

        _stt_singleton = WhisperSTT(pool=InferencePool("simulator-stt", max_workers=1, max_pending=64))
    return _stt_singleton


def _resample(x: npt.NDArray[Any], in_rate: int, out_rate: int) -> FloatArray:
    x = np.asarray(x, dtype=np.float32)
    if in_rate == out_rate:
        return x
    from telebridge.audio.resample import resample_once

    return np.asarray(resample_once(x, in_rate, out_rate), dtype=np.float32)


async def _synthesize_8k(tts: PiperTTS, text: str) -> FloatArray:
    pcm = await tts.synthesize(text)
    audio = np.asarray(pcm, dtype=np.float32)
    if np.asarray(pcm).dtype == np.int16:
        audio = audio / np.float32(32768.0)
    return _resample(audio, int(tts.sample_rate), RATE)


async def _transcribe_8k(stt: WhisperSTT, audio: FloatArray) -> str:
    if audio.size == 0:
        return ""
    result = await stt.transcribe(_resample(audio, RATE, 16000))
    return str(result.text).strip()


# ---------------------------------------------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# The call
# ---------------------------------------------------------------------------------------------------------------


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


class _Session:
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
        self._echo_line = (
            np.zeros(int(round(echo.delay * RATE)) + FRAME, np.float32) if echo is not None else None
        )
        self._echo_gain = np.float32(10 ** (echo.gain_db / 20)) if echo is not None else np.float32(0)
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
        if self._echo_line is not None:
            line = self._echo_line
            line[:-FRAME] = line[FRAME:].copy()
            line[-FRAME:] = heard
            out = out + self._echo_gain * line[:FRAME]
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


async def simulate_call(
    url: str,
    *,
    script: Sequence[Action] = (),
    auth_token: str | None = None,
    from_number: str = "+15551230001",
    to_number: str = "+15559870002",
    extra_form: Mapping[str, str] | None = None,
    custom_parameters: Mapping[str, str] | None = None,
    duration: float = 30.0,
    end_when_quiet: float | None = None,
    transcribe: bool = True,
    webhook_path: str = "/twilio/voice",
    realtime: bool = True,
    account_sid: str | None = None,
    public_url: str | None = None,
    tts: PiperTTS | None = None,
    stt: WhisperSTT | None = None,
    http_timeout: float = 15.0,
    echo: LineEcho | None = None,
    line_noise_dbfs: float | None = None,
    noise_seed: int = 0,
    twilio_api: TwilioApiHook | None = None,
) -> SimulatedCall:
    """Place one simulated inbound call against the telebridge server at ``url`` (e.g. http://127.0.0.1:8000).

    ``custom_parameters`` are merged over the TwiML's ``<Parameter>``s in ``start`` (a test hook; real Twilio
    sends only the TwiML's). ``public_url``, when the server validates webhooks against its public base URL,
    is what the webhook signature is computed over (and sent as X-Forwarded-Proto/Host). ``realtime=False``
    drops the 20 ms pacing (a virtual clock drives playback): only for fake servers in tests.
    ``echo``, ``line_noise_dbfs`` (seeded by ``noise_seed``) and ``twilio_api``: see the module docstring.
    """
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError("duration must be > 0")
    if end_when_quiet is not None and not end_when_quiet > 0:
        raise ValueError("end_when_quiet must be > 0")
    script = list(script)

    # Synthesize before dialling so that model time never disturbs the 20 ms clock.
    audio: dict[int, FloatArray] = {}
    for i, action in enumerate(script):
        if isinstance(action, Say):
            if tts is not None:
                audio[i] = await _synthesize_8k(tts, action.text)
            else:  # the default voice is deterministic, so its output can be reused across calls
                if action.text not in _say_cache:
                    _say_cache[action.text] = await _synthesize_8k(_default_tts(), action.text)
                audio[i] = _say_cache[action.text]
        elif isinstance(action, Play):
            audio[i] = action.audio

    account_sid = account_sid or _sid("AC")
    call_sid = _sid("CA")
    stream_sid = _sid("MZ")
    form = _webhook_form(
        account_sid=account_sid,
        call_sid=call_sid,
        from_number=from_number,
        to_number=to_number,
        extra=extra_form or {},
    )
    webhook_url = _join(url, webhook_path)
    headers = {"User-Agent": "TwilioProxy/1.1", "I-Twilio-Idempotency-Token": secrets.token_hex(16)}
    if public_url:
        pub = urlsplit(public_url)
        headers["X-Forwarded-Proto"] = pub.scheme
        headers["X-Forwarded-Host"] = pub.netloc
    if auth_token:
        headers["X-Twilio-Signature"] = _signature(_join(public_url or url, webhook_path), form, auth_token)
    async with httpx.AsyncClient(timeout=http_timeout) as http:
        response = await http.post(webhook_url, data=form, headers=headers)
    if not 200 <= response.status_code < 300:
        raise WebhookRejected(response.status_code, response.text)
    twiml = response.text
    target = parse_twiml(twiml)

    start_params = dict(target.parameters)
    start_params.update({str(k): str(v) for k, v in (custom_parameters or {}).items()})
    ws_headers: dict[str, str] = {}
    if auth_token:
        ws_headers["X-Twilio-Signature"] = _signature(target.url, {}, auth_token)
    try:
        ws = await connect(
            _dial_url(url, target.url),
            additional_headers=ws_headers,
            user_agent_header="Twilio.TmeWs/1.0",
            compression=None,
            max_size=16 * 1024 * 1024,
            ping_interval=None,
            open_timeout=http_timeout,
            proxy=None,
        )
    except InvalidStatus as exc:
        body = exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
        raise StreamRejected(exc.response.status_code, body) from None

    session = _Session(
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
    try:
        await session.run()
    finally:
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
        custom_parameters=start_params,
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


# ---------------------------------------------------------------------------------------------------------------
# Presentation
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


class _InOrder(argparse.Action):
    """Collect --say/--wav/--dtmf into one list in command-line order: that order is the script's order."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        items = list(getattr(namespace, "script_items", None) or [])
        items.append((self.dest, values))
        namespace.script_items = items
        current = list(getattr(namespace, self.dest, None) or [])
        current.append(values)
        setattr(namespace, self.dest, current)


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``telebridge simulate``."""
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="telebridge server to call")
    parser.add_argument(
        "--say", action=_InOrder, metavar="TEXT", help="caller says TEXT (repeatable; after the agent goes quiet)"
    )
    parser.add_argument(
        "--at", action="append", type=float, default=[], metavar="SECONDS",
        help="say the n-th --say at this time instead of waiting for the agent (repeatable, paired in order)",
    )
    parser.add_argument("--wav", action=_InOrder, metavar="FILE", help="caller plays this recording (repeatable)")
    parser.add_argument("--dtmf", action=_InOrder, metavar="DIGIT@SECONDS", help="press a key, e.g. 1@5.0")
    parser.add_argument("--out", metavar="FILE", help="write what the caller heard to this WAV file (8 kHz)")
    parser.add_argument(
        "--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"),
        help="sign requests like Twilio (default: $TWILIO_AUTH_TOKEN)",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="hang up after this many seconds")
    parser.add_argument("--quiet", type=float, default=0.8, help="agent silence (s) that counts as 'done talking'")
    parser.add_argument("--custom", action="append", default=[], metavar="K=V", help="extra start customParameters")
    parser.add_argument("--from", dest="from_number", default="+15551230001")
    parser.add_argument("--to", dest="to_number", default="+15559870002")
    parser.add_argument("--webhook-path", default="/twilio/voice")
    parser.add_argument("--public-url", help="sign the webhook for this public base URL (server behind a proxy)")
    parser.add_argument("--no-transcribe", action="store_true", help="skip Whisper on the agent's speech")


def _parse_dtmf(spec: str) -> Dtmf:
    digit, sep, at = spec.partition("@")
    if not sep:
        raise ValueError(f"--dtmf expects DIGIT@SECONDS, got {spec!r}")
    return Dtmf(at=float(at), digit=digit)


def _build_cli_script(args: argparse.Namespace) -> list[Action]:
    quiet = float(args.quiet)
    ats = list(args.at or [])
    says = 0
    script: list[Action] = []
    for kind, value in getattr(args, "script_items", None) or []:
        if kind == "say":
            at = ats[says] if says < len(ats) else None
            says += 1
            script.append(Say(at=at, text=value, after_agent_quiet=None if at is not None else quiet))
        elif kind == "wav":
            from telebridge.audio.wav import read_wav

            samples, rate = read_wav(value)
            script.append(Play(at=None, audio=_resample(samples, int(rate), RATE), after_agent_quiet=quiet))
        elif kind == "dtmf":
            script.append(_parse_dtmf(value))
    script.append(Hangup(after_agent_quiet=quiet))
    return script


def _parse_custom(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--custom expects K=V, got {item!r}")
        out[key] = value
    return out


async def run_simulate(args: argparse.Namespace, *, out: Callable[[str], Any] = print) -> int:
    """``telebridge simulate``: 0 on a clean call, 1 if the server broke the protocol, 2 if setup failed."""
    try:
        script = _build_cli_script(args)
        custom = _parse_custom(args.custom or [])
    except (ValueError, OSError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    try:
        call = await simulate_call(
            args.url,
            script=script,
            auth_token=args.auth_token or None,
            from_number=args.from_number,
            to_number=args.to_number,
            custom_parameters=custom,
            duration=args.duration,
            transcribe=not args.no_transcribe,
            webhook_path=args.webhook_path,
            public_url=args.public_url,
        )
    except (SimulatorError, httpx.HTTPError, OSError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    out(format_transcript(call))
    out(
        f"-- call {call.call_sid}: {call.duration:.1f} s, ended by {call.ended_by}, close code {call.close_code}, "
        f"{len(call.events_of('mark'))} mark echo(s), {len(call.events_of('clear'))} clear(s), "
        f"max tick lateness {call.max_tick_lateness * 1000:.0f} ms"
    )
    for warning in call.warnings:
        out(f"warning: {warning}")
    for err in call.protocol_errors:
        out(f"protocol error: {err}")
    if args.out:
        from telebridge.audio.wav import write_wav

        write_wav(args.out, call.heard, RATE)
        out(f"wrote {args.out}")
    return 1 if call.protocol_errors else 0

