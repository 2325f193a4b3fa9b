"""A phone call without a phone: plays Twilio's part, and the person's on the other end, against a running
telebridge server.

Why this exists
---------------
Trying a voice agent should not need a Twilio account, a public URL and a handset, and the end-to-end tests need
a Twilio that is strict, observable and repeatable. The parts:

* :mod:`.inbound` — :func:`simulate_call`: an inbound call the way Twilio places it (signed webhook,
  ``<Connect><Stream>``, signed WebSocket upgrade) with a scripted caller;
* :mod:`.outbound` — :func:`run_outbound_call`: what Twilio does after ``Calls.create`` (status callbacks, the
  signed TwiML request with Twilio's outbound parameters, the stream, the AMD verdict), with a scripted
  callee from :mod:`.callee` (a human who says "hello", voicemail with a beep, busy, no answer);
* :mod:`.stream` — Twilio's side of one Media Stream: 20 ms μ-law frames against absolute deadlines, silence
  included, strict decoding of every server frame, and :class:`CallHandle` for REST updates (hang up, redirect);
* :mod:`.playback` — Twilio's outbound playback buffer (marks echoed when played, all at once on ``clear``);
* :mod:`.wire` — the frames Twilio sends and a parser of server frames as strict as Twilio's;
* :mod:`.script` — :class:`Say`, :class:`Play`, :class:`Dtmf`, :class:`Hangup`, :class:`LineEcho`,
  :func:`noise_burst`; :mod:`.results` — :class:`SimulatedCall` and the transcript; :mod:`.cli` —
  ``telebridge simulate``.

The script runs in order; ``at`` is the earliest time an action may fire and ``after_agent_quiet`` makes it wait
until the agent has spoken since the previous action and then been silent that long — "greeting, question,
answer" without guessing latencies. ``after_agent_speech`` fires once that many seconds of agent audio were heard
since the previous action: barge-ins and backchannels land mid-reply, whatever the reply's latency.

The line can be made realistic: ``echo`` (a :class:`LineEcho`, which an :class:`EchoChange` in the script can
switch on, alter or remove mid-call), ``line_noise_dbfs`` and :func:`noise_burst`.
With ``twilio_api`` (a :class:`TwilioApiHook`, e.g. a local fake of Twilio's REST API) the call can be hung up
or redirected the way Twilio does it after a REST update: ``stop`` on the stream, then the socket closes.
"""

from __future__ import annotations

from .callee import Callee, beep_tone, busy, human, no_answer, voicemail
from .cli import add_simulate_arguments, run_simulate
from .constants import FRAME, RATE, SEGMENT_GAP, SPEECH_RMS, TICK
from .inbound import simulate_call
from .outbound import OutboundCallRequest, OutboundResult, run_outbound_call
from .playback import PlaybackBuffer
from .results import (
    AgentSegment,
    NoStreamInTwiml,
    SimulatedCall,
    SimulatorError,
    StreamRejected,
    TimelineEvent,
    WebhookRejected,
    agent_segments_from_audio,
    format_transcript,
)
from .script import Action, Dtmf, EchoChange, Hangup, LineEcho, Play, Say, noise_burst
from .speech import _default_stt, _default_tts, _say_cache
from .stream import CallHandle, TwilioApiHook
from .twiml import StreamTarget, parse_twiml

__all__ = [
    "Say", "Play", "Dtmf", "Hangup", "EchoChange", "Action", "LineEcho", "noise_burst",
    "CallHandle", "TwilioApiHook", "TimelineEvent", "AgentSegment", "SimulatedCall",
    "SimulatorError", "WebhookRejected", "NoStreamInTwiml", "StreamRejected", "StreamTarget", "parse_twiml",
    "agent_segments_from_audio", "simulate_call", "format_transcript", "add_simulate_arguments", "run_simulate",
    "PlaybackBuffer", "Callee", "human", "voicemail", "busy", "no_answer", "beep_tone",
    "OutboundCallRequest", "OutboundResult", "run_outbound_call",
    "RATE", "TICK", "FRAME", "SPEECH_RMS", "SEGMENT_GAP",
]
