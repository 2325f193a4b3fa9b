"""The echo scenarios of the turn-taking suite (issue 10): echo that appears, changes or goes mid-call, over a
matrix of onsets × echo-return loss × delay × line noise, and a caller talking over the echo (double talk),
after an "uh-huh" that must not interrupt. Shared by ``tests/test_scenarios.py`` (:data:`ECHO_SUITE` and one
double-talk call) and ``bench/scenarios.py --echo`` (the matrix); the rest of the suite is in ``scenariolib``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from scenariolib import (
    INTERRUPTION,
    Context,
    ScenarioResult,
    assistant_messages,
    caller_onsets,
    clears,
    events,
    response_split,
    user_messages,
)
from speechutil import fuzzy_ratio
from telebridge.simulator import EchoChange, LineEcho, Say, SimulatedCall

# --- echo that comes and goes (issue 10) ------------------------------------------------------------------------
QUESTION = "Tell me about your services."
HANDSET = LineEcho(-30.0, 0.06)  # a handset's (or a hybrid's) faint, short echo
SPEAKER = LineEcho(-12.0, 0.25, tail=0.04)  # a speakerphone's: loud, late, with some of the room in it


@dataclass(frozen=True)
class EchoCase:
    """One cell of the echo matrix: when the echo appears (``onset``), how loud (``erl`` dB down) and late
    (``delay`` s) it is, over which line noise (dBFS, ``None`` = a clean line), with a reverberation ``tail``
    and a clock ``drift_ppm``.

    Onsets: ``greeting`` (echo on the line from the start), ``reply2`` / ``reply5`` (appears 1 s into the
    2nd or 5th reply), ``change`` (handset echo from the start, speakerphone from 1 s into reply 2, back to
    the handset 1 s into reply 3), ``gone`` (echo from the start, gone 1 s into reply 2)."""

    onset: str = "reply2"
    erl: float = 12.0
    delay: float = 0.25
    noise: float | None = -60.0
    tail: float = 0.0
    drift_ppm: float = 0.0

    @property
    def name(self) -> str:
        noise = "clean" if self.noise is None else f"n{-self.noise:.0f}"
        extra = (f"-t{self.tail * 1000:.0f}" if self.tail else "") + (f"-d{self.drift_ppm:.0f}" if self.drift_ppm else "")
        return f"echo-{self.onset}-{self.erl:.0f}dB-{self.delay * 1000:.0f}ms-{noise}{extra}"

    @property
    def echo(self) -> LineEcho:
        return LineEcho(-self.erl, self.delay, tail=self.tail, drift_ppm=self.drift_ppm)

    def script(self) -> tuple[LineEcho | None, list[Any], int]:
        """(echo at the start, the caller's script, replies expected: greeting + one per question)."""
        questions = {"greeting": 1, "reply2": 1, "reply5": 4, "change": 2, "gone": 1}[self.onset]
        start: LineEcho | None = {"greeting": self.echo, "change": HANDSET, "gone": self.echo}.get(self.onset)
        script: list[Any] = []
        for i in range(questions):
            script.append(Say(at=None, text=QUESTION, after_agent_quiet=1.0))
            reply = i + 2
            if self.onset == f"reply{reply}" or (self.onset == "change" and reply == 2):
                script.append(EchoChange(at=None, echo=self.echo, after_agent_speech=1.0))
            elif (self.onset == "change" and reply == 3) or (self.onset == "gone" and reply == 2):
                script.append(EchoChange(at=None, echo=HANDSET if self.onset == "change" else None,
                                         after_agent_speech=1.0))
        return start, script, questions + 1


def not_the_callers(call: SimulatedCall, record: Any, kind: str) -> list[tuple[float, str, str]]:
    """The call's ``kind`` events (pause, interrupt) that no sound of the caller's own can explain: none of their
    bursts was under way in the 1.5 s before (on a loaded machine a reply can stall long enough for the scripted
    caller to speak over it; that pause is the caller's, not the echo's)."""
    bursts = caller_onsets(call)
    return [e for e in events(record, kind) if not any(a - 0.1 <= e[0] <= b + 1.5 for a, b in bursts)]


async def echo_case(ctx: Context, case: EchoCase) -> ScenarioResult:
    """Echo appears, changes or goes mid-call: no pause, no interruption, every reply played out, no echo turn."""
    start, script, replies = case.script()
    result = ScenarioResult(case.name, f"echo {case.onset}: {case.erl:g} dB down, {case.delay * 1000:.0f} ms")
    call, record = await ctx.call(script, echo=start, line_noise_dbfs=case.noise, custom={"greeting": "short",
                                  "answer": "short", "echo_canceller": "true"}, duration=12 + 9 * replies, end_when_quiet=2.0,
                                  noise_seed=int(case.delay * 1000))
    result.false_interruptions = len(not_the_callers(call, record, "interrupt"))
    result.pauses = len(not_the_callers(call, record, "pause"))
    said = assistant_messages(record)
    result.check("no interruption and no pause (but the caller's own)",
                 result.false_interruptions == 0 and result.pauses == 0, (record.metrics.events, caller_onsets(call)))
    result.check(f"all {replies} replies played out, none cut off", len(said) == replies and not any(
        s.endswith("…") for s in said) or record.metrics.count("interrupt") > result.false_interruptions, said)
    users = user_messages(record)
    result.check("the echo never became a caller turn", len(users) == replies - 1 and
                 all(fuzzy_ratio(u, QUESTION) > 0.6 for u in users), users)
    result.figure("echo_windows_suppressed", record.metrics.echo_windows_suppressed)
    for i in range(1, len(record.metrics.turns)):
        row = response_split(record, i)
        if row is not None:
            result.figure("response_total", row["total"])
    return result


async def echo_double_talk(ctx: Context, case: EchoCase = EchoCase("greeting", 12.0, 0.25),
                           backchannel: bool = True) -> ScenarioResult:
    """A caller who really interrupts while the echo is loud still barges in at once; their "uh-huh" before
    (with ``backchannel``) does not."""
    name = f"double-talk-{case.erl:.0f}dB-{case.delay * 1000:.0f}ms" + ("-uh-huh" if backchannel else "")
    result = ScenarioResult(name, f"interruption over a {case.erl:g} dB echo")
    first = [Say(at=None, text="Uh-huh.", after_agent_speech=2.0)] if backchannel else []
    call, record = await ctx.call(
        [*first, Say(at=None, text=INTERRUPTION, after_agent_speech=2.5)],
        echo=case.echo, line_noise_dbfs=case.noise, duration=20, end_when_quiet=1.0, noise_seed=7,
        custom={"echo_canceller": "true"},
    )
    bursts = caller_onsets(call)
    onset = bursts[len(first)][0] if len(bursts) > len(first) else None
    after = [t for t in clears(call) if onset is not None and t >= onset]
    result.check("clear sent after the caller started", after, (bursts, clears(call)))
    result.check("the backchannel did not interrupt (at most a pause, resumed)",
                 record.metrics.count("resume") >= record.metrics.count("pause") - 1, record.metrics.events)
    if onset is not None and after:
        result.figure("onset_to_clear", after[0] - onset)
    result.false_interruptions = max(0, record.metrics.count("interrupt") - 1)
    result.pauses = record.metrics.count("pause")
    users = user_messages(record)
    result.check("one interruption, and it became the caller's turn", record.metrics.count("interrupt") == 1
                 and len(users) >= 1 and fuzzy_ratio(users[-1], INTERRUPTION) > 0.6, (record.metrics.events, users))
    result.check("the backchannel is not a caller turn", len(users) == 1, users)
    return result


# The echo matrix's corners that the test suite runs (bench/scenarios.py --echo runs the whole matrix).
ECHO_SUITE = [
    EchoCase("reply2", 12.0, 0.25, -60.0),  # the regression: speakerphone switched on during reply 2
    EchoCase("change", 12.0, 0.25, -60.0),  # handset → speakerphone → handset
    EchoCase("gone", 12.0, 0.25, -60.0),  # loud from the start, gone during reply 2
    EchoCase("reply2", 30.0, 0.04, None),  # faint and early, on a clean line
    EchoCase("reply2", 12.0, 0.40, -45.0, tail=0.04, drift_ppm=100.0),  # late, reverberant, drifting, noisy
]


def echo_job(case: EchoCase) -> Callable[[Context], Awaitable[ScenarioResult]]:
    return lambda ctx: echo_case(ctx, case)
