"""Who picks up an outbound call: scripted callees for the simulator, and what Twilio's AMD makes of them.

* :func:`human` — answers after a ring or two, says "Hello?", listens, maybe answers, hangs up when the agent
  has been quiet a while. Twilio's ``DetectMessageEnd`` calls it ``human`` once the hello is followed by
  silence.
* :func:`voicemail` — a recorded greeting, then a real beep (a ~1 kHz tone, as answering machines play), then
  "records" until the agent has left a message and gone quiet. AMD says ``machine_end_beep`` after the beep.
* :func:`busy`, :func:`no_answer` — the call never connects; Twilio reports ``busy`` / ``no-answer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .constants import RATE, FloatArray
from .script import Action, Hangup, Play, Say

__all__ = ["Callee", "human", "voicemail", "busy", "no_answer", "beep_tone"]

CalleeKind = Literal["human", "voicemail", "busy", "no-answer"]


@dataclass(frozen=True)
class Callee:
    """``script`` runs once the call is answered. The AMD verdict ``answered_by`` comes ``verdict_delay``
    seconds after the audio of action ``verdict_after`` has been sent (that many seconds after answering if
    the script has no audio)."""

    kind: CalleeKind
    script: tuple[Action, ...] = ()
    ring_seconds: float = 1.0
    answered_by: str | None = None
    verdict_after: int = 0
    verdict_delay: float = 1.2
    duration: float = 45.0


def beep_tone(freq: float = 1000.0, seconds: float = 0.5, dbfs: float = -9.0, rate: int = RATE) -> FloatArray:
    """An answering machine's beep: a pure tone with 5 ms fades (no clicks)."""
    n = max(1, int(seconds * rate))
    t = np.arange(n) / rate
    x = np.sin(2 * np.pi * freq * t) * 10 ** (dbfs / 20)
    ramp = min(n // 2, int(0.005 * rate))
    if ramp:
        env = np.ones(n)
        env[:ramp] = np.linspace(0, 1, ramp)
        env[-ramp:] = np.linspace(1, 0, ramp)
        x *= env
    return x.astype(np.float32)


def human(
    greeting: str = "Hello?",
    then: tuple[Action, ...] | list[Action] = (),
    *,
    answer_after: float = 0.4,
    hang_up_when_quiet: float = 2.0,
    ring_seconds: float = 1.0,
    duration: float = 45.0,
) -> Callee:
    """A person: "Hello?" ``answer_after`` seconds into the call, then ``then``, then hangs up once the agent has
    been quiet ``hang_up_when_quiet`` seconds."""
    script = (Say(at=answer_after, text=greeting), *then, Hangup(after_agent_quiet=hang_up_when_quiet))
    return Callee("human", script, ring_seconds, answered_by="human", verdict_after=0, verdict_delay=1.2,
                  duration=duration)


def voicemail(
    greeting: str = "Hi, you've reached Sam. I can't take your call right now. Please leave a message after the tone.",
    *,
    beep_hz: float = 1000.0,
    beep_seconds: float = 0.5,
    answer_after: float = 0.3,
    hang_up_when_quiet: float = 3.0,
    ring_seconds: float = 1.0,
    duration: float = 45.0,
) -> Callee:
    """An answering machine: greeting, beep, then it records until the agent has been quiet a while."""
    script = (
        Say(at=answer_after, text=greeting),
        Play(at=None, audio=beep_tone(beep_hz, beep_seconds), text="<beep>"),
        Hangup(after_agent_quiet=hang_up_when_quiet),
    )
    return Callee("voicemail", script, ring_seconds, answered_by="machine_end_beep", verdict_after=1,
                  verdict_delay=0.3, duration=duration)


def busy() -> Callee:
    return Callee("busy", ring_seconds=0.2)


def no_answer(ring_seconds: float = 2.0) -> Callee:
    """Rings ``ring_seconds`` (or the call's Timeout, if shorter) and nobody picks up."""
    return Callee("no-answer", ring_seconds=ring_seconds)
