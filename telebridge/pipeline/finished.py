"""What the process keeps of a finished conversation: a slim record, never the live :class:`~.call.CallSession`.

Why: ``Runtime.finished`` (the last calls, for tests, benchmarks and debugging) used to keep whole sessions, and a
session holds everything a live call needs -- every reply's audio, the VAD's buffered speech, the turn engine,
the provider sessions, the sink and its mark ledger. The record keeps what those readers look at (the
conversation, its measurements, how it ended, which providers it used), copied out when the call is
unregistered, so the session and its buffers are freed with the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from .call_metrics import CallMetrics


@dataclass(slots=True)
class FinishedCall:
    call_id: str
    custom_data: dict[str, Any]
    config: Any  # the SessionConfig (None if the agent never started)
    history: list[dict[str, Any]]
    session_data: dict[str, Any]
    metrics: CallMetrics
    ended_reason: str | None
    # The parts' few facts, under the session's attribute names (None where the session's part was None, as on
    # the session): ``speech.fallbacks``, ``speech.stt_cfg``, ``speech.tts_cfg``; ``events.fired``; ``keypad.sent``.
    speech: SimpleNamespace | None
    events: SimpleNamespace | None
    keypad: SimpleNamespace | None

    @classmethod
    def of(cls, call: Any) -> FinishedCall:
        speech = getattr(call, "speech", None)
        events = getattr(call, "events", None)
        keypad = getattr(call, "keypad", None)
        return cls(
            call_id=call.call_id,
            custom_data=dict(getattr(call, "custom_data", None) or {}),
            config=getattr(call, "config", None),
            history=list(getattr(call, "history", None) or []),
            session_data=getattr(call, "session_data", None) or {},
            metrics=getattr(call, "metrics", None) or CallMetrics(),
            ended_reason=getattr(call, "ended_reason", None),
            speech=None if speech is None else SimpleNamespace(
                fallbacks=list(speech.fallbacks), stt_cfg=speech.stt_cfg, tts_cfg=speech.tts_cfg),
            events=None if events is None else SimpleNamespace(fired=list(events.fired)),
            keypad=None if keypad is None else SimpleNamespace(sent=list(keypad.sent)),
        )
