"""Benchmark agent that talks for the whole call: the full-duplex CPU scenario.

Why: while the caller streams audio in (noise, which never starts a turn), the agent's greeting is a monologue of
about two minutes, so every call also exercises the outbound path for the whole measurement window (TTS,
22.05→8 kHz resampling, μ-law encoding, paced media + mark frames, echoed marks and the mark ledger). The
monologue repeats a handful of sentences, so a server-side TTS phrase cache (if there is one) is hit after the
first call; without one, Piper synthesizes every sentence of every call, which the benchmark then shows.
``allow_interruptions=False`` keeps the monologue going whatever the VAD makes of the noise.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from bench.agents import bench_vad
from telebridge import (
    Agent,
    ConfigureSessionInput,
    LLMResponseHandlerInput,
    SessionConfig,
)

SENTENCES = (
    "Thank you for calling the benchmark line, where every call is important to us.",
    "This message is long on purpose, so that the agent keeps talking for the whole measurement.",
    "Our opening hours are Monday to Friday from eight in the morning until six in the evening.",
    "You can find us at fourteen Harbor Street, right next to the ferry terminal.",
    "Please stay on the line, and the next available agent will be with you shortly.",
    "While you wait, remember that most questions are answered on our website.",
)
REPEATS = 4  # six sentences of ~5 s each, four times over: about two minutes of speech
MONOLOGUE = " ".join(SENTENCES * REPEATS)
# Experiments: BENCH_TALKER_UNIQUE=1 makes every sentence of every call different (like LLM replies), so no phrase
# cache can help and the full TTS cost shows.
UNIQUE = os.environ.get("BENCH_TALKER_UNIQUE") == "1"


def monologue(call_sid: str) -> str:
    if not UNIQUE:
        return MONOLOGUE
    tag = " ".join(call_sid[-4:].upper())
    return " ".join(f"{s[:-1]}, for caller {tag}, part {i + 1}." for i, s in enumerate(SENTENCES * REPEATS))

# BENCH_ECHO_GUARD=0: the energy guard instead of the echo canceller (cpu_per_call.py's duplex-off scenarios).
ECHO_GUARD = os.environ.get("BENCH_ECHO_GUARD") != "0"


async def configure_session(input: ConfigureSessionInput) -> SessionConfig:
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are a benchmark agent that talks."}],
        vad=bench_vad(),
        first_message=monologue(str((input.get("custom_data") or {}).get("CallSid", ""))),
        allow_interruptions=False,
        echo_guard=True,
        echo_canceller=ECHO_GUARD,
    )


async def _reply() -> AsyncIterator[str]:
    yield SENTENCES[0]


async def llm_response_handler(input: LLMResponseHandlerInput) -> AsyncIterator[str]:
    return _reply()


agent = Agent(id="bench-talker", configure_session=configure_session, llm_response_handler=llm_response_handler)
