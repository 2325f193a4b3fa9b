"""Benchmark agent that only listens: the inbound-only CPU scenario.

Why: with no greeting and callers that send only line noise, the server's steady-state work per call is the
inbound path alone (WebSocket receive, Media Streams decode, μ-law decode, batched Silero VAD at the line's 8 kHz,
segmenter/turn engine ticks). The reply handler exists because an agent must have one; noise never starts a turn, so
it should never run during the benchmark.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from bench.agents import bench_vad
from telebridge import (
    Agent,
    ConfigureSessionInput,
    LLMResponseHandlerInput,
    SessionConfig,
)

REPLY = "Sorry, I only listen."


async def configure_session(input: ConfigureSessionInput) -> SessionConfig:
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are a benchmark agent that listens."}],
        vad=bench_vad(),
    )


async def _reply() -> AsyncIterator[str]:
    yield REPLY


async def llm_response_handler(input: LLMResponseHandlerInput) -> AsyncIterator[str]:
    return _reply()


agent = Agent(id="bench-listener", configure_session=configure_session, llm_response_handler=llm_response_handler)
