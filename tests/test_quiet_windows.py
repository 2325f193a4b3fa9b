"""Quiet windows take the short way through a call's VAD window handler (``CallSession._on_window``): the same
windows through the short way and through the full path must leave the call in the same state and do the same
things -- the gate (noise floor, echo canceller verdicts, onset), the segmenter (prefix padding), the end-of-turn
model's bookkeeping, the turn engine (its timers: silence check-ins, max duration, a greeting waiting for the
callee) and every action. Sans I/O: real parts, synthetic windows and time, no server.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import fields, is_dataclass
from enum import Enum
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from telebridge.pipeline.aec_gate import EchoGate, Verdict
from telebridge.pipeline.call import CallSession
from telebridge.pipeline.end_of_turn import EndOfTurn
from telebridge.pipeline.inbound_gate import InboundGate
from telebridge.pipeline.segmenter import SegmenterParams, VadSegmenter
from telebridge.pipeline.turns import StartReply, Transcribe, TurnEngine, TurnParams

RATE, WIN = 8000, 256
SPAN = WIN / RATE
WORDS = ["", "hello there", "uh-huh", "I'd like to book a table"]


class FullTick(TurnEngine):
    """The engine without its quiet-spell shortcut (see turn_idle): every tick in full."""

    def _idle(self):
        return []


class FakeListener:
    """Stands for the call's STT (``listening.Listener``): records what the window handler asks of it."""

    early = None
    streaming = False

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.interim = self

    def cancel_early(self) -> None:
        self.calls.append("cancel_early")

    def wants_early(self, pause: float) -> bool:
        self.calls.append(("wants_early", pause))
        return False

    def poll(self, end_time: float, uid: int, start: float, snapshot: Any) -> None:
        self.calls.append(("interim", end_time, uid, start))

    def utterance_ended(self, at: float, span: tuple[float, float]) -> None:
        self.calls.append(("utterance_ended", span))  # (``at`` is a wall clock)


class Sink:
    sample_rate = RATE
    on_turn_audible = on_turn_played = None


def call(gate: str, params: TurnParams, *, quiet_path: bool, greet: bool) -> CallSession:
    """A call as ``CallSession._setup`` leaves it, its actions recorded (a transcript answers each Transcribe)."""
    s = CallSession(runtime=None, agent=None, call_id="q", custom_data={}, sink=Sink(), close=None)  # type: ignore[arg-type]
    s._quiet_path = quiet_path
    s._segmenter = VadSegmenter(SegmenterParams(sample_rate=RATE, min_silence_duration=0.3))
    s.engine = (TurnEngine if quiet_path else FullTick)(params)
    s.gate = InboundGate(RATE, RATE, canceller=gate == "canceller", guard=gate != "noise")
    s._eot = EndOfTurn(0.5, sample_rate=RATE)
    s.listener = FakeListener()  # type: ignore[assignment]
    s.done = []  # type: ignore[attr-defined]
    s.spawned = []  # type: ignore[attr-defined]
    s.replies = []  # type: ignore[attr-defined]
    words = itertools.cycle(WORDS)

    def run_actions(actions: list[Any]) -> None:
        for action in actions:
            s.done.append((s._now, action))  # type: ignore[attr-defined]
            if isinstance(action, Transcribe):
                run_actions(s.engine.transcript(action.utterance_id, next(words), s._now))  # type: ignore[union-attr]
            elif isinstance(action, StartReply):
                s.replies.append((action.turn_id, s._now + 1.0))  # type: ignore[attr-defined]  # "played" 1 s later

    def spawn(coro: Any, what: str) -> None:
        coro.close()
        s.spawned.append((s._now, what))  # type: ignore[attr-defined]

    s._run_actions = run_actions  # type: ignore[method-assign]
    s._spawn = spawn  # type: ignore[method-assign,assignment]
    if greet:
        run_actions(s.engine.greet("Hello!", 0.0, wait_for_callee=True, timeout=1.5))
    return s


def feed(s: CallSession, prob: float, audio: np.ndarray, end: float) -> None:
    """One VAD window ending at ``end``; replies whose audio has played by then finish first."""
    for turn, at in [r for r in s.replies if r[1] <= end]:  # type: ignore[attr-defined]
        s.replies.remove((turn, at))  # type: ignore[attr-defined]
        s._run_actions(s.engine.agent_finished(turn, at))  # type: ignore[union-attr]
    s._on_window(prob, s.gate.cancel_held(audio), end)  # (the canceller sees the audio first, as on a call)


def state(x: Any, depth: int = 0) -> Any:
    """A comparable picture of an object's state (arrays by content; objects by their fields)."""
    if isinstance(x, np.ndarray):
        return ("array", x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, (bool, int, float, str, bytes, type(None), Enum)):
        return x
    if isinstance(x, bytearray):
        return ("bytearray", bytes(x))
    if isinstance(x, (list, tuple, collections.deque)):
        return [state(v, depth + 1) for v in x]
    if isinstance(x, dict):
        return {k: state(v, depth + 1) for k, v in x.items()}
    if isinstance(x, itertools.count):
        return repr(x)
    if callable(x) and not hasattr(x, "__dict__") and not hasattr(x, "__slots__"):
        return "callable"
    assert depth < 8, type(x)
    kind = next(c.__name__ for c in type(x).__mro__ if c.__module__.startswith("telebridge"))  # (FullTick: its engine)
    if is_dataclass(x):
        return (kind, {f.name: state(getattr(x, f.name), depth + 1) for f in fields(x)})
    names = list(vars(x)) if hasattr(x, "__dict__") else [n for c in type(x).__mro__
                                                           for n in getattr(c, "__slots__", ())]
    return (kind, {n: state(getattr(x, n), depth + 1) for n in names
                               if n not in ("_idle_until", "snapshot")})


def call_state(s: CallSession) -> Any:
    return state({"now": s._now, "segmenter": s._segmenter, "gate": s.gate, "engine": s.engine, "eot": s._eot,
                  "listener": s.listener.calls, "done": s.done, "spawned": s.spawned})  # type: ignore[attr-defined]


# A call's windows: stretches of line noise (Silero below its threshold), of speech, of blips too short to start
# an utterance, of digital silence; at levels around the noise gate's.
stretch = st.tuples(st.sampled_from(["quiet", "speech", "blip", "zero", "mumble"]), st.integers(1, 40),
                    st.sampled_from([-65.0, -50.0, -35.0, -20.0]))


def windows(plan: list[tuple[str, int, float]], seed: int) -> list[tuple[float, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for kind, n, dbfs in plan:
        n = min(n, 3) if kind == "blip" else n
        for _ in range(n):
            if kind == "zero":
                out.append((0.0, np.zeros(WIN, np.float32)))
                continue
            level = 10 ** ((dbfs + (25.0 if kind in ("speech", "blip") else 0.0)) / 20)
            audio = (rng.standard_normal(WIN) * level).astype(np.float32)
            prob = {"quiet": rng.uniform(0.0, 0.5), "mumble": rng.uniform(0.3, 0.7)}.get(kind, rng.uniform(0.5, 1.0))
            out.append((float(np.float32(prob)), audio))
    return out


# A call: its windows, its echo gate, whether a greeting waits for the callee, its timers.
CALLS = dict(plan=st.lists(stretch, min_size=1, max_size=15), seed=st.integers(0, 2**16),
             gate=st.sampled_from(["canceller", "guard", "noise"]), greet=st.booleans(),
             silence_timeout=st.sampled_from([None, 1.0, 2.5]), max_call_duration=st.sampled_from([None, 6.0]))


@settings(max_examples=30, deadline=None)
@given(**CALLS)
async def test_quiet_windows_the_short_way_leave_the_call_as_the_full_path_does(
        plan, seed, gate, greet, silence_timeout, max_call_duration):
    params = TurnParams(min_silence_duration=0.3, min_endpointing_delay=0.3, silence_timeout=silence_timeout,
                        max_silence_reprompts=1, max_call_duration=max_call_duration)
    short, full = (call(gate, params, quiet_path=q, greet=greet) for q in (True, False))
    for i, (prob, audio) in enumerate(windows(plan, seed)):
        for s in (short, full):
            feed(s, prob, audio, (i + 1) * SPAN)
        assert short.done == full.done, f"window {i}"  # type: ignore[attr-defined]
    assert call_state(short) == call_state(full)


async def test_a_quiet_call_takes_the_short_way_and_its_timers_still_fire():
    """8 s of line noise with a check-in after 2 s of silence: the check-in, the goodbye and the hang-up come at the
    windows the full path gives them, and every window took the short way."""
    params = TurnParams(silence_timeout=2.0, max_silence_reprompts=1)
    short, full = (call("canceller", params, quiet_path=q, greet=False) for q in (True, False))
    pushes = []
    original = short._segmenter.push  # type: ignore[union-attr]
    short._segmenter.push = lambda *a: pushes.append(a) or original(*a)  # type: ignore[union-attr,method-assign]
    for i, (prob, audio) in enumerate(windows([("quiet", 250, -50.0)], 7)):
        for s in (short, full):
            feed(s, prob, audio, (i + 1) * SPAN)
    del short._segmenter.push  # type: ignore[union-attr]
    assert pushes == []
    assert [type(a).__name__ for _, a in short.done] == ["StartReply", "StartReply", "HangUp"]  # check-in, bye
    assert short.done[0][0] == full.done[0][0] == 63 * SPAN  # (the first window 2 s after the start)
    assert call_state(short) == call_state(full)


@settings(max_examples=30, deadline=None)
@given(**CALLS)
async def test_the_quiet_windows_of_a_resting_call_change_nothing_but_due_timers(
        plan, seed, gate, greet, silence_timeout, max_call_duration):
    """While a call is at rest (``_at_rest``), the VAD hub may hand it its windows a tick late (``VadHub.run``):
    that is harmless only if a quiet window then starts nothing -- no action, no task -- unless a timer falls due
    at it (the engine's ``idle_at``). Any window that is not quiet ends the rest."""
    params = TurnParams(min_silence_duration=0.3, min_endpointing_delay=0.3, silence_timeout=silence_timeout,
                        max_silence_reprompts=1, max_call_duration=max_call_duration)
    s = call(gate, params, quiet_path=True, greet=greet)
    threshold = s._segmenter.params.activation_threshold  # type: ignore[union-attr]
    for i, (prob, audio) in enumerate(windows(plan, seed)):
        end = (i + 1) * SPAN
        resting = s._at_rest() and not s.replies  # type: ignore[attr-defined]  # (a reply in flight: heard on a call)
        due = not s.engine.idle_at(end)  # type: ignore[union-attr]
        before = (len(s.done), len(s.spawned))  # type: ignore[attr-defined]
        feed(s, prob, audio, end)
        if resting and prob < threshold and not due:
            assert (len(s.done), len(s.spawned)) == before, f"window {i}"  # type: ignore[attr-defined]
        if prob >= threshold:
            assert not s._at_rest()


async def test_a_call_rests_only_while_nobody_speaks_and_nothing_is_due():
    params = TurnParams(min_silence_duration=0.3, min_endpointing_delay=0.3, silence_timeout=3.0)
    s = call("canceller", params, quiet_path=True, greet=False)
    assert not s._at_rest()  # (no window yet)
    # Line noise; a mumble the STT makes nothing of; line noise; a question, its answer (played for 1 s); line noise.
    plan = windows([("quiet", 10, -50.0), ("speech", 15, -35.0), ("quiet", 30, -50.0), ("speech", 15, -35.0),
                    ("quiet", 80, -50.0)], 11)
    states, answered = [], 0
    for i, (prob, audio) in enumerate(plan):
        feed(s, prob, audio, (i + 1) * SPAN)
        states.append(s._at_rest())
        if not answered and s.replies:  # type: ignore[attr-defined]
            answered = i
    assert all(states[:10])  # line noise, the agent silent
    assert not any(states[10:35])  # the caller speaks, then the pause that ends the turn
    assert all(states[35:55])  # (nothing was heard: no reply)
    assert answered > 55 and not any(states[55 : answered + 31])  # the question, its pause; the answer on its way
    assert all(states[answered + 32 :])  # quiet again once the answer has played
    s._reply = object()  # type: ignore[assignment]  # the agent is heard: a barge-in must be seen at once
    assert not s._at_rest()
    s._reply = None
    s.keypad.placed(1, 0, 800, "1")  # keypad tones in flight
    assert not s._at_rest()
    s.keypad._blocks.clear()
    assert s._at_rest()
    greeting = call("canceller", params, quiet_path=True, greet=True)  # a greeting waits for the callee's hello
    for i, (prob, audio) in enumerate(windows([("quiet", 40, -50.0)], 12)):  # 1.3 s (it waits 1.5)
        feed(greeting, prob, audio, (i + 1) * SPAN)
        assert not greeting._at_rest()
    s._quiet_path = False  # (tests' full path: never resting)
    feed(s, 0.0, np.zeros(WIN, np.float32), (len(plan) + 1) * SPAN)
    assert not s._at_rest()


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(list(Verdict) + [None]), st.integers(0, 400), st.integers(1, 800)),
                      min_size=1, max_size=300))
def test_echo_gate_verdicts_with_the_quiet_shortcut_are_the_harshest_of_the_blocks(steps):
    """EchoGate.verdict answers PASS at once for blocks after the last one judged otherwise: the same answer as
    the harshest verdict of the blocks a window overlaps, over random verdicts (None: an idle block)."""
    gate = EchoGate(RATE, 160, margin=2.0, prior=0.5, floor_memory=1.0, keep=0.5)
    kept = len(gate._v)
    judged: list[Verdict] = []
    for verdict, start, length in steps:
        index = len(judged)
        if verdict is None:
            gate.idle(index, False)
            verdict = Verdict.PASS
        elif verdict is Verdict.PASS:
            gate.judge(index, 1.0, 0.0, 0.0, False, False)  # (no reference above its floor)
        elif verdict is Verdict.ECHO:
            gate.judge(index, 0.5, 1.0, 10.0, True, True)  # (no louder than the echo left)
        else:
            gate.judge(index, 1.0, 0.0, 10.0, True, False)  # (a new sound as loud as an echo could be)
        assert gate._v[index % kept] == verdict
        judged.append(verdict)
        blocks = len(judged)
        s = start * 8
        e = s + length
        first, last = max(s // 160, blocks - kept, 0), min((e - 1) // 160, blocks - 1)
        expected = min(judged[first:last + 1], default=Verdict.PASS)
        assert gate.verdict(s, e, blocks) is expected
