"""The echo guard, the noise gate and the playout clock, on real speech envelopes with synthetic time."""

from __future__ import annotations

import numpy as np
import pytest

from speechutil import synth
from telebridge.pipeline.echo import EchoGuard, NoiseGate, PlayoutClock

WIN = 256  # 32 ms at 8 kHz
AGENT = ("Thanks for calling. Our office is open from nine in the morning until five in the evening, Monday to "
         "Friday. We are located at fourteen Harbor Street, right next to the ferry terminal.")
CALLER = "Sorry, can you stop for a second? I have a question about my appointment."


def energies(x: np.ndarray) -> np.ndarray:
    n = len(x) // WIN
    frames = x[: n * WIN].reshape(n, WIN).astype(np.float64)
    return (frames * frames).mean(axis=1)


def delayed(x: np.ndarray, seconds: float, gain_db: float) -> np.ndarray:
    d = int(seconds * 8000)
    return np.concatenate([np.zeros(d, np.float32), x[: len(x) - d]]) * np.float32(10 ** (gain_db / 20))


def noise(n: int, dbfs: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 10 ** (dbfs / 20)).astype(np.float32)


def run(guard: EchoGuard, inbound: np.ndarray, played: np.ndarray) -> np.ndarray:
    e_in, e_ref = energies(inbound), energies(played)
    return np.array([guard.push(float(a), float(b)) for a, b in zip(e_in, e_ref)])


@pytest.mark.parametrize("delay", [0.1, 0.2, 0.3])
def test_echo_at_minus_20_db_is_never_the_caller(delay):
    agent = synth(AGENT)
    inbound = delayed(agent, delay, -20) + noise(len(agent), -60)
    guard = EchoGuard()
    passed = run(guard, inbound, agent)
    loud = energies(inbound) > 10 ** (-50 / 10)
    assert not passed[loud].any(), f"{passed[loud].sum()} echo windows passed as the caller"
    assert guard.gain is not None and 0.05 < guard.gain < 0.2
    assert abs(guard.delay * 0.032 - delay) <= 0.07
    assert guard.echo_active


def test_the_caller_talking_over_the_echo_gets_through():
    agent = synth(AGENT)
    caller = synth(CALLER)
    start = int(4.0 * 8000)
    inbound = delayed(agent, 0.2, -20) + noise(len(agent), -60)
    only_caller = np.zeros_like(inbound)
    only_caller[start : start + len(caller)] = caller[: len(inbound) - start]
    inbound += only_caller
    guard = EchoGuard()
    passed = run(guard, inbound, agent)
    caller_e = energies(only_caller)
    voiced = caller_e > 10 ** (-30 / 10)
    assert passed[voiced].mean() > 0.7  # most of the caller's speech windows pass (the VAD bridges the rest)
    assert guard.gain is not None and guard.gain < 0.2  # double talk did not pass for a loud echo
    assert not passed[: start // WIN][energies(inbound)[: start // WIN] > 1e-5].any()  # echo before them did not


def test_no_echo_measures_as_a_quiet_line_and_lowers_the_bar():
    agent = synth(AGENT)
    guard = EchoGuard()
    run(guard, noise(len(agent), -65), agent)
    assert guard.gain is not None and guard.gain < 0.05 and not guard.echo_active
    caller = synth(CALLER)
    passed = run(guard, caller, agent[: len(caller)])
    assert passed[energies(caller) > 10 ** (-40 / 10)].mean() > 0.9


def test_silence_from_the_agent_disarms_the_guard():
    guard = EchoGuard()
    caller = synth(CALLER)
    passed = run(guard, caller, np.zeros_like(caller))
    assert passed.all() and not guard.echo_active and guard.suppressed == 0


def test_line_noise_never_passes_the_noise_gate_but_speech_does():
    gate = NoiseGate()
    line = noise(8000 * 4, -45, seed=3)
    refused = [not gate.push(float(e)) for e in energies(line)]
    assert all(refused[8:])  # after the first quarter second the floor is known
    speech = synth(CALLER) + noise(len(synth(CALLER)), -45, seed=4)
    passed = [gate.push(float(e)) for e in energies(speech)]
    loud = energies(synth(CALLER)) > 10 ** (-30 / 10)
    assert np.mean(np.array(passed)[loud]) > 0.9


def test_playout_clock_follows_marks_and_extrapolates_between_them():
    clock = PlayoutClock(8000, max_ahead=0.12)
    clock.reset(0, 10.0)
    assert clock.advance(10.032) == (0, 256)
    assert clock.advance(10.064) == (256, 512)
    assert clock.advance(10.2) == (512, 960)  # capped at 120 ms past the last mark
    clock.mark(1280, 10.16)  # the mark came back with the audio of 10.16 s: playback was there then
    start, end = clock.advance(10.232)
    assert start == 960 and abs(end - (1280 + 576)) <= 1
    clock.reset(4000, 11.0)  # a resumed segment starts at offset 4000
    assert clock.advance(11.032) == (4000, 4256)
