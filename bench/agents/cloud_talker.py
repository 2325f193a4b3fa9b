"""Benchmark agent for the ``cloud`` CPU scenario: the ``talker`` monologue, heard by Deepgram live STT and spoken by
Deepgram Aura TTS (``STT.Deepgram`` + ``TTS.Deepgram``).

Why: most production phone agents run on cloud speech, so the server's realistic steady-state work per call is
the inbound path (VAD, turn engine) plus streaming every caller frame up a Deepgram ``/v1/listen`` socket, and the
outbound path fed by a Deepgram ``/v1/speak`` socket (binary μ-law 8 kHz frames in, paced media + marks out).
``cpu_per_call.py`` points ``TELEBRIDGE_DEEPGRAM_BASE_URL`` at light fakes in a third process
(``bench/cloud_fakes.py``) and sets ``DEEPGRAM_API_KEY``. Same monologue and experiment switches as the talker
(``BENCH_TALKER_UNIQUE``, ``BENCH_VAD_SAMPLE_RATE``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from bench.agents import bench_vad
from bench.agents.talker import SENTENCES, monologue
from telebridge import (
    STT,
    TTS,
    Agent,
    ConfigureSessionInput,
    LLMResponseHandlerInput,
    SessionConfig,
)


async def configure_session(input: ConfigureSessionInput) -> SessionConfig:
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are a benchmark agent that talks."}],
        vad=bench_vad(),
        stt=STT.Deepgram(),
        tts=TTS.Deepgram(),
        first_message=monologue(str((input.get("custom_data") or {}).get("CallSid", ""))),
        allow_interruptions=False,
    )


async def _reply() -> AsyncIterator[str]:
    yield SENTENCES[0]


async def llm_response_handler(input: LLMResponseHandlerInput) -> AsyncIterator[str]:
    return _reply()


agent = Agent(id="bench-cloud-talker", configure_session=configure_session, llm_response_handler=llm_response_handler)
