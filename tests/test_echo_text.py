"""Words heard over the agent that are its own echo (``Listener.not_our_words``), sans I/O."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from telebridge.pipeline.backchannel import WordJudge
from telebridge.pipeline.inbound_gate import InboundGate
from telebridge.pipeline.listening import Listener
from telebridge.pipeline.turn_actions import DEFAULT_BACKCHANNELS_FALLBACK

SAID = "Thanks for calling. This greeting is long on purpose, so that you can talk over it. How can I help you?"


def listener(echo_possible: bool = True) -> Listener:
    reply = SimpleNamespace(spans=[SimpleNamespace(start=0, end=80_000, text=SAID)])
    engine = SimpleNamespace(judge=WordJudge(DEFAULT_BACKCHANNELS_FALLBACK))
    return Listener(call_id="CAtest", speech=None, engine=engine, vad_rate=16000, sink_rate=8000,  # type: ignore[arg-type]
                    now=lambda: 0.0, playing=lambda: reply, heard=lambda r: 40_000, spawn=None,  # type: ignore[arg-type]
                    observe=lambda *a: None, on_interim=lambda *a: None, on_transcript=lambda *a: None,
                    echo_possible=lambda: echo_possible)


@pytest.mark.parametrize("heard, kept", [
    ("so that you can talk", ""),  # all echo
    ("That, uh-huh.", "uh-huh"),  # an echo remnant before the caller's backchannel
    ("Mm-hmm, yeah, over it", "Mm-hmm, yeah"),
    ("Sorry, can you stop for a second?", "Sorry, can you stop for a second?"),  # the caller's, whatever it shares
    ("That's wrong.", "That's wrong."),
    ("that", ""),  # a lone word the agent just said (an interim transcript of the echo's remnant)
    ("Stop.", "Stop."),
    ("Help me with my booking", "Help me with my booking"),  # the caller's answer repeats the agent's word
    ("I want to talk", "I want to talk"),
])
def test_the_agents_own_words_are_not_the_callers(heard, kept):
    assert listener().not_our_words(heard) == kept


def test_an_echo_remnant_does_not_turn_a_backchannel_into_words():
    judge = WordJudge(DEFAULT_BACKCHANNELS_FALLBACK)
    text = listener().not_our_words("That, uh-huh.")
    assert judge.count(text) == 0 and judge.is_backchannel(text)


@pytest.mark.parametrize("heard", ["that", "so that you can talk", "That, uh-huh.", "Help me with my booking"])
def test_on_a_line_without_echo_the_words_over_the_agent_are_all_the_callers(heard):
    """No echo of the agent can be on the line (the canceller found none): an answer that repeats the agent's words
    ("Tuesday", offered in its question) is the caller's, whole."""
    assert listener(echo_possible=False).not_our_words(heard) == heard


def test_echo_is_possible_once_the_canceller_finds_one_on_the_line():
    """The gate's ``echo_possible``: never with the canceller before it has found an echo (a handset line), at once
    when it has (a speakerphone: the agent back 12 dB down, 200 ms late), and always without a canceller."""
    assert InboundGate(8000, 8000, canceller=False, guard=True).echo_possible()
    rng = np.random.default_rng(5)
    far = (rng.standard_normal(3 * 8000) * 0.1).astype(np.float32)
    far *= np.repeat(rng.uniform(0.2, 1.0, len(far) // 800), 800).astype(np.float32)  # (syllable-like swells)
    near = np.concatenate([np.zeros(1600, np.float32), 0.25 * far[:-1600]])
    near += (rng.standard_normal(len(near)) * 1e-3).astype(np.float32)
    clean, echoing = (InboundGate(8000, 8000, canceller=True, guard=False) for _ in range(2))
    seen = []
    for i in range(0, len(far), 160):
        clean.aec.process((rng.standard_normal(160) * 1e-3).astype(np.float32), far[i : i + 160])
        echoing.aec.process(near[i : i + 160], far[i : i + 160])
        assert not clean.echo_possible()
        seen.append(echoing.echo_possible())
    assert seen[-1] and seen.index(True) < 30  # (found within 0.6 s of the agent starting to talk)


def test_the_guards_playout_log_is_kept_only_for_the_guard():
    """The heard position per caller frame feeds the energy guard's playout clock; with the canceller nothing reads it,
    so nothing is kept (it grew by 50 entries a second for the whole of each reply)."""
    reply = SimpleNamespace(audible=True, paused=False, base=0, segment=1)
    outbound = SimpleNamespace(heard=lambda segment: 0)
    guarded = InboundGate(8000, 8000, canceller=False, guard=True)
    cancelled = InboundGate(8000, 8000, canceller=True, guard=False)
    for gate in (guarded, cancelled):
        for i in range(1, 501):
            gate.note_audio(160 * i, reply, outbound)
    assert len(guarded._heard_log) == 500
    assert len(cancelled._heard_log) == 0
