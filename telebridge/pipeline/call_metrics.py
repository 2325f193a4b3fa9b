"""What one conversation measured: per-turn latency split, turn-taking events, replies and echo/noise counts.

Read by the benchmarks (``bench/``), the tests (``record.metrics``) and the logs; filled by the call's shell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .reply import _Reply


@dataclass(slots=True)
class CallMetrics:
    """Per-turn latency split and turn-taking events, for the benchmarks, the tests and the logs."""

    turns: list[dict[str, float]] = field(default_factory=list)
    # (call time, kind, detail): pause / resume / interrupt / dtmf / reprompt / goodbye / hangup / transfer / ...
    events: list[tuple[float, str, str]] = field(default_factory=list)
    # One row per finished reply: turn, kind, samples (whole reply), heard (samples), text, cut_off.
    replies: list[dict[str, Any]] = field(default_factory=list)
    # One row per reply (greetings too): seconds from its first sentence reaching the TTS to the provider's first
    # audio (``tts``), and from that audio to the first media message sent (``bridge``). Benchmarks read these.
    speech: list[dict[str, float]] = field(default_factory=list)
    interims: int = 0
    early_stt: int = 0  # transcripts started inside a pause, before the end of the turn was sure (used or not)
    echo_windows_suppressed: int = 0
    noise_windows_refused: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for _, k, _ in self.events if k == kind)

    def record_latency(self, reply: _Reply) -> dict[str, float] | None:
        """The reply's first audio went out: its speech row, and for an answer its latency row (returned)."""
        t = reply.timings
        if "tts_request" in t and "tts_first_audio" in t:
            self.speech.append({"turn": reply.turn_id, "tts": t["tts_first_audio"] - t["tts_request"],
                                "bridge": t["first_audio"] - t["tts_first_audio"]})
        if reply.greeting or "speech_end" not in t:
            return None
        llm_first = t.get("llm_first_token", t["start"])
        row = {
            "total": t["first_audio"] - t["speech_end"],
            # From the end of speech to the reply starting, minus what STT added beyond the endpointing wait.
            "endpointing": t["start"] - t["speech_end"],
            "stt": t.get("stt", 0.0),
            "llm_first_token": llm_first - t["start"],
            "tts_first_audio": t.get("tts_first_audio", t["first_audio"]) - llm_first,
            "send": t["first_audio"] - t.get("tts_first_audio", t["first_audio"]),
        }
        self.turns.append(row)
        return row

    def record_reply(self, reply: _Reply, heard: int, cut_off: bool) -> None:
        self.replies.append({
            "turn": reply.turn_id, "kind": reply.kind, "samples": reply.enqueued, "heard": heard,
            "text": " ".join(s.text for s in reply.spans), "cut_off": cut_off, "segments": len(reply.segments),
        })
