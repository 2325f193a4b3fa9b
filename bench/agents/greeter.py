"""Benchmark agent that says one short greeting with the TTS provider named by ``BENCH_TTS``: the per-provider
latency benchmark (``bench/provider_latency.py``).

Why one sentence, different on every call: the benchmark times the first sentence from the moment it reaches
the TTS to the first media frame sent to Twilio, and matches it with the one request the provider's fake served.
A different sentence per call (the CallSid's tail spelled out) keeps the embedded Piper's phrase cache (the
reference row) from answering instead of the synthesizer.

``BENCH_TTS``: ``piper`` (default), ``deepgram``, ``elevenlabs``, ``cartesia``, ``openai``, ``azure``, ``google``,
``fishaudio``. Endpoints and keys come from the server's settings and the providers' usual environment variables
(the benchmark points them at local fakes). The benchmark process sets ``BENCH_TTS`` between calls; each call
reads it when it starts.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from telebridge import (
    TTS,
    VAD,
    Agent,
    ConfigureSessionInput,
    LLMResponseHandlerInput,
    SessionConfig,
)


def tts_config(provider: str) -> Any:
    if provider == "piper":
        return TTS.Piper()
    if provider == "deepgram":
        return TTS.Deepgram()
    if provider == "elevenlabs":
        return TTS.ElevenLabs()
    if provider == "cartesia":
        return TTS.Cartesia()
    if provider == "openai":
        return TTS.OpenAI()
    if provider == "azure":
        return TTS.Azure(voice="en-US-JennyNeural")
    if provider == "google":
        return TTS.Google()
    if provider == "fishaudio":
        return TTS.FishAudio()
    raise ValueError(f"BENCH_TTS={provider!r}: unknown provider")


def greeting(call_sid: str) -> str:
    tag = " ".join(call_sid[-4:].upper()) or "X"
    # No comma: the sentence chunker may cut a first sentence at a comma, and the cut must include the tag.
    return f"Welcome caller {tag} to the benchmark line."


async def configure_session(input: ConfigureSessionInput) -> SessionConfig:
    provider = os.environ.get("BENCH_TTS", "piper")
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are a benchmark agent that greets."}],
        vad=VAD.Silero(),
        tts=tts_config(provider),
        first_message=greeting(str((input.get("custom_data") or {}).get("CallSid", ""))),
    )


async def _reply() -> AsyncIterator[str]:
    yield "Goodbye."


async def llm_response_handler(input: LLMResponseHandlerInput) -> AsyncIterator[str]:
    return _reply()


agent = Agent(id="bench-greeter", configure_session=configure_session, llm_response_handler=llm_response_handler)
