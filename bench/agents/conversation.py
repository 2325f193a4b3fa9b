"""Benchmark agent that holds a conversation on cloud speech: the ``bench/load.py`` capacity, soak and fault runs.

Why: the capacity question is how many *real conversations* one machine carries, not how many monologues. Each
call here hears the caller on Deepgram live STT and answers on Deepgram Aura TTS (both light fakes in their own
process, ``bench/cloud_fakes.py``, pointed at with ``TELEBRIDGE_DEEPGRAM_BASE_URL``), and its "LLM" is a fake with
no network: the reply handler streams a canned answer of a few sentences word by word, after a first-token delay
(``BENCH_LLM_FIRST_TOKEN_MS``, default 250) and a per-word delay (``BENCH_LLM_WORD_MS``, default 8), like a
streaming chat completion. Interruptions are on (the callers barge in now and then).

Faults: with ``BENCH_BACKUP_ORIGIN`` set (a second fakes process), Deepgram at that origin is the fallback STT and
TTS, so a primary provider going down mid-call is answered by the backup (apology first), not by the embedded
Whisper/Piper, which could not carry hundreds of calls on two cores.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from telebridge import (
    STT,
    TTS,
    VAD,
    Agent,
    ConfigureSessionInput,
    LLMResponseHandlerInput,
    SessionConfig,
)

GREETING = "Thank you for calling the benchmark line. How can I help?"
ANSWERS = (
    ("We are open Monday to Friday from eight in the morning until six in the evening. "
     "On Saturdays we open at nine and close at one. "
     "We are closed on Sundays and public holidays."),
    ("You can find us at fourteen Harbor Street, right next to the ferry terminal. "
     "There is a car park behind the building. "
     "The number twelve bus stops at the door."),
    ("Most questions are answered on our website. "
     "You can also write to us, and we reply within a day. "
     "Is there anything else I can help you with?"),
)
FIRST_TOKEN = float(os.environ.get("BENCH_LLM_FIRST_TOKEN_MS", "250")) / 1000
PER_WORD = float(os.environ.get("BENCH_LLM_WORD_MS", "8")) / 1000
BACKUP = os.environ.get("BENCH_BACKUP_ORIGIN") or None
# Experiments: BENCH_END_OF_TURN=0 turns the end-of-turn model off (fixed endpointing delays only).
END_OF_TURN = os.environ.get("BENCH_END_OF_TURN", "1") != "0"
# Experiments: BENCH_ECHO_GUARD=0 turns the echo guard (the phone call's echo canceller) off.
ECHO_GUARD = os.environ.get("BENCH_ECHO_GUARD", "1") != "0"


async def configure_session(input: ConfigureSessionInput) -> SessionConfig:
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are a benchmark agent that answers questions."}],
        vad=VAD.Silero(),
        stt=STT.Deepgram(),
        tts=TTS.Deepgram(),
        fallback_stt=[STT.Deepgram(base_url=BACKUP)] if BACKUP else [],
        fallback_tts=[TTS.Deepgram(base_url=BACKUP)] if BACKUP else [],
        first_message=GREETING,
        allow_interruptions=True,
        end_of_turn_model=END_OF_TURN,
        echo_guard=ECHO_GUARD,
    )


async def _stream(text: str) -> AsyncIterator[str]:
    await asyncio.sleep(FIRST_TOKEN)
    words = text.split(" ")
    for i, word in enumerate(words):
        yield word if i == len(words) - 1 else word + " "
        if PER_WORD:
            await asyncio.sleep(PER_WORD)


async def llm_response_handler(input: LLMResponseHandlerInput) -> AsyncIterator[str]:
    turns = sum(1 for m in input["messages"] if m["role"] == "user")
    return _stream(ANSWERS[turns % len(ANSWERS)])


agent = Agent(id="bench-conversation", configure_session=configure_session, llm_response_handler=llm_response_handler)
