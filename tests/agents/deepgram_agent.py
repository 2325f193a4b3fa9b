"""An agent that hears through Deepgram's live STT and speaks with Deepgram Aura (a fake Deepgram in tests:
``deepgram_base_url`` points there and ``DEEPGRAM_API_KEY`` is set by the test)."""

from telebridge import STT, TTS, VAD, Agent, SessionConfig

GREETING = "Hello, this is the pharmacy."
HOURS = "We open at nine in the morning and close at six."


async def configure_session(input):
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are a test agent."}],
        vad=VAD.Silero(),
        stt=STT.Deepgram(),
        tts=TTS.Deepgram(),
        first_message=GREETING,
    )


async def llm_response_handler(input):
    said = next((m["content"] for m in reversed(input["messages"]) if m["role"] == "user"), "").lower()
    yield HOURS if ("open" in said or "hour" in said or "time" in said) else "Sorry, could you say that again?"


agent = Agent(id="deepgram-test-agent", configure_session=configure_session, llm_response_handler=llm_response_handler)
