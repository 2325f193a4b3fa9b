"""Words heard over the agent that are its own echo (``Listener.not_our_words``), sans I/O."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from telebridge.pipeline.backchannel import WordJudge
from telebridge.pipeline.listening import Listener
from telebridge.pipeline.turn_actions import DEFAULT_BACKCHANNELS_FALLBACK

SAID = "Thanks for calling. This greeting is long on purpose, so that you can talk over it. How can I help you?"


def listener() -> Listener:
    reply = SimpleNamespace(spans=[SimpleNamespace(start=0, end=80_000, text=SAID)])
    engine = SimpleNamespace(judge=WordJudge(DEFAULT_BACKCHANNELS_FALLBACK))
    return Listener(call_id="CAtest", speech=None, engine=engine, vad_rate=16000, sink_rate=8000,  # type: ignore[arg-type]
                    now=lambda: 0.0, playing=lambda: reply, heard=lambda r: 40_000, spawn=None,  # type: ignore[arg-type]
                    observe=lambda *a: None, on_interim=lambda *a: None, on_transcript=lambda *a: None)


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
