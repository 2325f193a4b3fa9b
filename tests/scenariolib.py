"""The turn-taking scenario suite: real server, real speech at 8 kHz μ-law, the simulator playing Twilio.

Shared by ``tests/test_scenarios.py`` (asserts every check) and ``bench/scenarios.py`` (repeats them and prints
the pass/fail and latency table). Each scenario places one or more simulated calls against a live telebridge
server running ``tests/agents/scenario_agent.py`` (per-call settings travel as custom parameters) and returns a
:class:`ScenarioResult`: named checks plus measured figures.

Measurements are caller-side where the issue defines them that way: *onset → clear* is from the first loud
frame of the caller's own speech (the simulator's clean caller track) to Twilio receiving ``clear``; *response*
is from the caller's last loud frame to the first loud frame of the answer they hear. The server's split of the
response (endpointing, STT, LLM, TTS, sending) comes from the call's metrics.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conftest import finished_call
from speechutil import fuzzy_ratio, normalise_words
from telebridge.simulator import (
    Dtmf,
    LineEcho,
    Play,
    Say,
    SimulatedCall,
    noise_burst,
    simulate_call,
)

AGENT_FILE = Path(__file__).parent / "agents" / "scenario_agent.py"


@functools.cache
def _agent() -> Any:
    """The scenario agent's module (its texts are what the checks compare with), loaded from its file."""
    spec = importlib.util.spec_from_file_location("scenario_agent_texts", AGENT_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
RATE = 8000
FRAME = 160
CALLER_LOUD = 10 ** (-40 / 20)
AGENT_LOUD = 10 ** (-45 / 20)
ENDPOINT_DELAY = 0.5  # max(vad.min_silence_duration 0.4, min_endpointing_delay 0.5) of the scenario agent
MIN_SILENCE = 0.4
INTERRUPTION = "Sorry, can you stop for a second? I have a question about my appointment."
AGENTS_WORDS = "Is that Monday to Friday?"  # the greeting's own words, asked back over it


@dataclass
class ScenarioResult:
    name: str
    title: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    figures: dict[str, list[float]] = field(default_factory=dict)
    pauses: int = 0
    false_interruptions: int = 0

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def check(self, label: str, ok: bool, detail: Any = "") -> None:
        self.checks.append((label, bool(ok), str(detail)[:300]))

    def figure(self, key: str, value: float | None) -> None:
        if value is not None:
            self.figures.setdefault(key, []).append(float(value))

    def failures(self) -> list[str]:
        return [f"{label}: {detail}" for label, ok, detail in self.checks if not ok]


@dataclass
class Context:
    """Where the scenarios run: the server (a tests/conftest.py LiveServer), its token, the fake Twilio API."""

    server: Any
    auth_token: str
    twilio_api: Any

    async def call(self, script: list[Any], *, custom: dict[str, str] | None = None, duration: float = 25.0,
                   end_when_quiet: float | None = 1.5, transcribe: bool = False, **kw: Any) -> tuple[SimulatedCall, Any]:
        call = await simulate_call(
            self.server.url, script=script, auth_token=self.auth_token, custom_parameters=custom or {},
            duration=duration, end_when_quiet=end_when_quiet, transcribe=transcribe, twilio_api=self.twilio_api,
            **kw,
        )
        return call, await finished_call(self.server, call.call_sid)


# --- measuring ---------------------------------------------------------------------------------------------------
def frame_rms(audio: np.ndarray) -> np.ndarray:
    n = len(audio) // FRAME
    frames = audio[: n * FRAME].reshape(n, FRAME).astype(np.float64)
    return np.sqrt((frames * frames).mean(axis=1))


def caller_onsets(call: SimulatedCall) -> list[tuple[float, float]]:
    """(start, end) of each burst of the caller's own sound, from the clean caller track."""
    loud = np.flatnonzero(frame_rms(call.caller_audio) > CALLER_LOUD)
    spans: list[tuple[float, float]] = []
    for i in loud:
        t = i * FRAME / RATE
        if spans and t - spans[-1][1] < 0.5:
            spans[-1] = (spans[-1][0], t + FRAME / RATE)
        else:
            spans.append((t, t + FRAME / RATE))
    return spans


def first_agent_audio_after(call: SimulatedCall, t: float) -> float | None:
    rms = frame_rms(call.heard)
    start = int(t * RATE / FRAME)
    after = np.flatnonzero(rms[start:] > AGENT_LOUD)
    return None if after.size == 0 else (start + int(after[0])) * FRAME / RATE


def clears(call: SimulatedCall) -> list[float]:
    return [e.t for e in call.events_of("clear")]


def response_split(record: Any, turn: int = 0) -> dict[str, float] | None:
    """Server-side split of a response; ``overhead`` is what the bridge itself added."""
    if len(record.metrics.turns) <= turn:
        return None
    row = dict(record.metrics.turns[turn])
    exposed_stt = max(0.0, MIN_SILENCE + row["stt"] - ENDPOINT_DELAY)
    row["overhead"] = row["total"] - ENDPOINT_DELAY - exposed_stt - row["llm_first_token"] - row["tts_first_audio"]
    return row


def assistant_messages(record: Any) -> list[str]:
    return [str(m["content"]) for m in record.history if m["role"] == "assistant" and m.get("content")]


def user_messages(record: Any) -> list[str]:
    return [str(m["content"]) for m in record.history if m["role"] == "user"]


def events(record: Any, kind: str) -> list[tuple[float, str, str]]:
    return [e for e in record.metrics.events if e[1] == kind]


# --- the scenarios -----------------------------------------------------------------------------------------------
async def interruption(ctx: Context, repeats: int = 1) -> ScenarioResult:
    """1. The caller speaks ≥ 1 s over the agent: the agent stops at once and answers."""
    GREETING, LONG_ANSWER = _agent().GREETING, _agent().LONG_ANSWER

    result = ScenarioResult("1-interruption", "real interruption (≥1 s over the agent)")
    for i in range(repeats):
        call, record = await ctx.call(
            [Say(at=None, text=INTERRUPTION, after_agent_speech=2.0 + 0.3 * i)], duration=14, end_when_quiet=1.0
        )
        bursts = caller_onsets(call)
        onset, speech_end = (bursts[0][0], bursts[-1][1]) if bursts else (None, None)
        after = [t for t in clears(call) if onset is not None and t >= onset]
        result.check(f"call {i + 1}: clear sent after the caller started", after, clears(call))
        if onset is not None and after:
            result.figure("onset_to_clear", after[0] - onset)
        said = assistant_messages(record)
        result.check(f"call {i + 1}: greeting kept only as heard, cut off",
                     said and said[0].endswith("…") and len(said[0]) < len(GREETING), said[:1])
        result.check(f"call {i + 1}: the interruption became the caller's turn",
                     user_messages(record) and fuzzy_ratio(user_messages(record)[0], INTERRUPTION) > 0.7,
                     user_messages(record))
        result.check(f"call {i + 1}: on_agent_interrupted fired with session_data and call id",
                     record.session_data["interrupted"] and record.session_data["interrupted"][0][1] == call.call_sid,
                     record.session_data["interrupted"])
        result.check(f"call {i + 1}: the agent answered", any(LONG_ANSWER[:30] in s for s in said), said)
        if speech_end is not None:
            answer = first_agent_audio_after(call, speech_end + 0.05)
            result.figure("response_caller_side", None if answer is None else answer - speech_end)
        split = response_split(record)
        if split is not None:
            for key in ("total", "endpointing", "stt", "llm_first_token", "tts_first_audio", "overhead"):
                result.figure(f"response_{key}", split[key])
        result.pauses += record.metrics.count("pause")
    return result


async def agents_words(ctx: Context) -> ScenarioResult:
    """1b. Over the agent, on a line without echo, the caller asks back with the agent's own words ("Is that Monday to
    Friday?", just after the greeting said "Monday to Friday"): the agent stops, and their words are their turn --
    not taken for the agent's echo, which this line cannot carry."""
    result = ScenarioResult("1b-agents-words", "the agent's own words, said back over it on a line without echo")
    call, record = await ctx.call([Say(at=None, text=AGENTS_WORDS, after_agent_speech=10.5)], duration=22,
                                  end_when_quiet=1.0)
    bursts = caller_onsets(call)
    after = [t for t in clears(call) if bursts and t >= bursts[0][0]]
    result.check("clear sent after the caller started", after, clears(call))
    said = user_messages(record)
    # (On a failure, the turn's story: pause / resume / interrupt, and the words heard, with their times.)
    result.check("their words became the caller's turn", said and fuzzy_ratio(said[0], AGENTS_WORDS) > 0.7,
                 (said, record.metrics.events, record.history))
    result.check("the agent answered them", any(_agent().LONG_ANSWER[:30] in s for s in assistant_messages(record)),
                 assistant_messages(record))
    return result


async def backchannel(ctx: Context) -> ScenarioResult:
    """2. "Uh-huh" and "mm-hmm" during a long reply never interrupt it."""
    GREETING = _agent().GREETING

    result = ScenarioResult("2-backchannel", "backchannels during a long reply")
    call, record = await ctx.call(
        [Say(at=None, text="Uh-huh.", after_agent_speech=2.0), Say(at=None, text="Mm-hmm.", after_agent_speech=2.5),
         Say(at=None, text="Yeah.", after_agent_speech=2.5)],
        duration=24,
    )
    result.false_interruptions = record.metrics.count("interrupt")
    result.pauses = record.metrics.count("pause")
    result.check("no interruption", result.false_interruptions == 0, record.metrics.events)
    result.check("the whole greeting is in the history", assistant_messages(record)[:1] == [GREETING],
                 assistant_messages(record)[:1])
    result.check("backchannels are not caller turns", not user_messages(record), user_messages(record))
    return result


async def echo(ctx: Context, delay: float = 0.2) -> ScenarioResult:
    """3. The agent's own voice echoed back at −20 dB, 100-300 ms late, over low noise: no self-interruption."""
    GREETING = _agent().GREETING

    result = ScenarioResult(f"3-echo-{int(delay * 1000)}ms", f"own audio echoed at −20 dB, {delay * 1000:.0f} ms")
    call, record = await ctx.call([], echo=LineEcho(-20.0, delay), line_noise_dbfs=-60.0, duration=22,
                                  noise_seed=int(delay * 1000))
    result.false_interruptions = record.metrics.count("interrupt")
    result.pauses = record.metrics.count("pause")
    result.check("no interruption and no pause", result.false_interruptions == 0 and result.pauses == 0,
                 record.metrics.events)
    result.check("the whole greeting played", assistant_messages(record)[:1] == [GREETING], assistant_messages(record))
    result.check("the echo never became a caller turn", not user_messages(record), user_messages(record))
    result.figure("echo_windows_suppressed", record.metrics.echo_windows_suppressed)
    return result


async def line_noise(ctx: Context) -> ScenarioResult:
    """4. Line noise at −45 dBFS and no speech: no turn ever starts."""
    result = ScenarioResult("4-line-noise", "line noise at −45 dBFS, no speech")
    call, record = await ctx.call([], custom={"greeting": "short"}, line_noise_dbfs=-45.0, duration=10,
                                  end_when_quiet=None, noise_seed=45)
    result.false_interruptions = record.metrics.count("interrupt")
    started = record.events.fired.count("on_user_started_speaking") if record.events else -1
    result.check("no caller turn", not user_messages(record), user_messages(record))
    result.check("no speech detected at all", started == 0, f"{started} on_user_started_speaking")
    result.check("only the greeting was said", len(assistant_messages(record)) == 1, assistant_messages(record))
    result.figure("noise_windows_refused", record.metrics.noise_windows_refused)
    return result


async def cough(ctx: Context) -> ScenarioResult:
    """5. A cough and a short laugh burst over the agent: at most a pause, resumed exactly where it stopped."""
    GREETING = _agent().GREETING

    result = ScenarioResult("5-cough", "cough + laugh burst during agent speech")
    burst = np.concatenate([noise_burst(0.25, -10, seed=1), np.zeros(800, np.float32), noise_burst(0.3, -12, seed=2)])
    call, record = await ctx.call(
        [Play(at=None, audio=burst, text="[coughs]", after_agent_speech=1.5),
         Say(at=None, text="Ha ha ha.", after_agent_speech=2.0)],
        duration=24,
    )
    pauses, resumes = events(record, "pause"), events(record, "resume")
    result.pauses = len(pauses)
    result.false_interruptions = record.metrics.count("interrupt")
    result.check("no interruption", result.false_interruptions == 0, record.metrics.events)
    # At most a pause: with a quick STT the laugh's first syllables come back as "uh-huh" before the interruption
    # threshold, and the agent talks through it (a backchannel's grace); with a slow one it pauses first.
    result.check("the laugh at most paused the agent, and it resumed", len(resumes) == len(pauses),
                 record.metrics.events)
    result.check("each resume starts where the caller stopped hearing",
                 [p[2] for p in pauses] == [r[2] for r in resumes], (pauses, resumes))
    greeting = next((r for r in record.metrics.replies if r["kind"] == "greeting"), None)
    if greeting is not None:
        replayed = (call.agent_samples_played - greeting["samples"]) / RATE
        result.figure("replayed_after_resume_s", replayed)
        result.check("nothing skipped, at most a chunk and the lead replayed per pause",
                     0.0 <= replayed <= 0.25 * max(1, len(pauses)), f"{replayed:.3f} s")
    result.check("the whole greeting is in the history, not cut off",
                 assistant_messages(record)[:1] == [GREETING], assistant_messages(record)[:1])
    return result


async def mid_sentence(ctx: Context) -> ScenarioResult:
    """6. Interrupted mid-sentence: the history holds exactly the heard prefix, marked as cut off."""
    LONG_ANSWER = _agent().LONG_ANSWER

    result = ScenarioResult("6-mid-sentence", "interruption mid-sentence: history = heard prefix")
    call, record = await ctx.call(
        [Say(at=None, text="Tell me about your services.", after_agent_quiet=0.6),
         Say(at=None, text="Wait, wait. How much is a cleaning?", after_agent_speech=4.5)],
        custom={"greeting": "short"}, duration=20, end_when_quiet=1.0, transcribe=True,
    )
    cut = next((r for r in record.metrics.replies if r["cut_off"]), None)
    said = assistant_messages(record)
    cut_msg = next((s for s in said if s.endswith("…")), "")
    prefix = cut_msg[:-1].split()
    answer_words = LONG_ANSWER.split()
    result.check("one reply was cut off", cut is not None and cut_msg, said)
    result.check("the kept text is a word prefix of the reply", prefix == answer_words[: len(prefix)] and
                 0 < len(prefix) < len(answer_words), cut_msg)
    if cut is not None and cut_msg:
        heard_s = cut["heard"] / RATE
        # What the caller heard of that reply, transcribed by the simulator: its words match the kept prefix.
        heard_text = " ".join(seg.text for seg in call.agent_segments[1:])
        heard_words = normalise_words(heard_text)
        kept = normalise_words(cut_msg)
        result.figure("heard_s", heard_s)
        result.check("the heard audio matches the kept text", fuzzy_ratio(" ".join(kept), " ".join(
            heard_words[: len(kept) + 2])) > 0.6, (cut_msg, heard_text))
        order = [m["role"] for m in record.history][-3:]
        result.check("history: cut-off reply, then the interrupting question", order[:2] == ["assistant", "user"]
                     or order == ["assistant", "user", "assistant"], order)
    return result


async def dtmf(ctx: Context) -> ScenarioResult:
    """7a. Keys: "*" stops the agent, digits + "#" reach the agent as a message and through on_dtmf."""
    result = ScenarioResult("7a-dtmf", "DTMF: interrupt key, digits as a message")
    call, record = await ctx.call(
        [Say(at=None, text="Tell me about your services.", after_agent_quiet=0.6),
         Dtmf(at=None, digit="*", after_agent_speech=2.0), Dtmf(at=None, digit="4"),
         Dtmf(at=None, digit="2"), Dtmf(at=None, digit="#")],
        custom={"greeting": "short", "dtmf_interrupt_digit": "*"}, duration=16, end_when_quiet=1.2,
    )
    digits = record.session_data["digits"]
    result.check("on_dtmf saw every key with the call id",
                 [d for d, _ in digits] == ["*", "4", "2", "#"] and all(c == call.call_sid for _, c in digits), digits)
    result.check("the interrupt key stopped the agent", record.metrics.count("interrupt") == 1 and clears(call),
                 record.metrics.events)
    result.check("the digits became one user message", any("pressed 42" in u for u in user_messages(record)),
                 user_messages(record))
    result.check("the agent answered the digits", any("You pressed 4 2" in s for s in assistant_messages(record)),
                 assistant_messages(record))
    return result


async def silence(ctx: Context) -> ScenarioResult:
    """7b. Silence: the agent checks in, then says goodbye and hangs up through the REST API."""
    result = ScenarioResult("7b-silence", "silence check-in, then goodbye and hang-up")
    call, record = await ctx.call(
        [], custom={"greeting": "short", "silence_timeout": "2.0", "max_silence_reprompts": "1"},
        duration=20, end_when_quiet=None,
    )
    said = assistant_messages(record)
    result.check("checked in once", said.count("Are you still there?") == 1, said)
    result.check("said goodbye last", said and "hang up now" in said[-1], said)
    result.check("hung up through Twilio's API", call.ended_by == "rest" and events(record, "hangup"),
                 (call.ended_by, record.metrics.events))
    reqs = ctx.twilio_api.requests_for(call.call_sid) if ctx.twilio_api else []
    result.check("the API got Status=completed", [r.form for r in reqs] == [{"Status": "completed"}], reqs)
    return result


async def max_duration(ctx: Context) -> ScenarioResult:
    """7c. The call reaches max_call_duration: the agent ends it politely."""
    result = ScenarioResult("7c-max-duration", "max call duration: polite goodbye, hang-up")
    call, record = await ctx.call(
        [Say(at=None, text="Tell me about your services.", after_agent_quiet=0.6)],
        custom={"greeting": "short", "max_call_duration": "6"}, duration=30, end_when_quiet=None,
    )
    said = assistant_messages(record)
    result.check("the answer in progress was not cut off", said and not any(s.endswith("…") for s in said), said)
    result.check("the time-limit goodbye came last", said and "time limit" in said[-1], said)
    result.check("hung up through Twilio's API", call.ended_by == "rest", call.ended_by)
    return result


async def end_call_tool(ctx: Context) -> ScenarioResult:
    """7d. The agent's end_call tool: the goodbye plays, then the call is hung up."""
    GOODBYE = _agent().GOODBYE

    result = ScenarioResult("7d-end-call", "end_call tool: goodbye, then hang-up")
    call, record = await ctx.call([Say(at=None, text="Thanks, bye!", after_agent_quiet=0.6)],
                                  custom={"greeting": "short"}, duration=15, end_when_quiet=None)
    said = assistant_messages(record)
    result.check("the goodbye was said in full before hanging up", said and said[-1] == GOODBYE, said)
    result.check("hung up through Twilio's API", call.ended_by == "rest" and events(record, "hangup"), call.ended_by)
    result.check("the tool ran through the tool loop",
                 {"on_function_calls_collected", "on_function_calls_executed"} <= set(record.events.fired),
                 record.events.fired)
    return result


async def transfer_tool(ctx: Context) -> ScenarioResult:
    """7e. The agent's transfer_call tool: <Dial> to the allow-listed number through the REST API."""
    result = ScenarioResult("7e-transfer", "transfer_call tool: <Dial> via the REST API")
    call, record = await ctx.call([Say(at=None, text="Can you put me through to sales please?",
                                       after_agent_quiet=0.6)],
                                  custom={"greeting": "short"}, duration=15, end_when_quiet=None)
    result.check("Twilio was told to dial the sales number",
                 call.redirect_twiml is not None and "<Number>+15557654321</Number>" in call.redirect_twiml,
                 call.redirect_twiml)
    result.check("the stream ended with the transfer", call.ended_by == "rest", call.ended_by)
    return result


def groups() -> list[list[Callable[[Context], Awaitable[ScenarioResult]]]]:
    """The scenarios, in groups whose calls run side by side (the echo ones are in ``scenario_echo``)."""
    from scenario_echo import ECHO_SUITE, echo_double_talk, echo_job

    return [
        [interruption, agents_words, backchannel, echo, line_noise, cough],
        [mid_sentence, dtmf, silence, max_duration, end_call_tool, transfer_tool],
        [*(echo_job(c) for c in ECHO_SUITE[:3])],
        [*(echo_job(c) for c in ECHO_SUITE[3:]), lambda ctx: echo_double_talk(ctx)],
    ]


async def run_all(ctx: Context, *, concurrent: bool = True) -> list[ScenarioResult]:
    """Every scenario once; each group's calls run side by side when ``concurrent`` (the tests), else in turn."""
    results: list[ScenarioResult] = []
    for group in groups():
        if concurrent:
            results += await asyncio.gather(*(scenario(ctx) for scenario in group))
        else:
            for scenario in group:
                results.append(await scenario(ctx))
    return results
