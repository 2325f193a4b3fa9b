"""An agent whose STT and TTS are both Azure Speech (``STT.Azure`` / ``TTS.Azure``): key and region come from
$AZURE_API_KEY / $AZURE_REGION, the origin from TELEBRIDGE_AZURE_SPEECH_BASE_URL (tests point it at a fake)."""

from telebridge import STT, TTS, VAD, Agent, SessionConfig

GREETING = "Hello, thanks for calling the bakery."
ANSWER = "We open at seven in the morning, every day of the week."
AGAIN = "Sorry, could you say that again?"


async def configure_session(input):
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are a bakery's phone assistant."}],
        vad=VAD.Silero(),
        stt=STT.Azure(languages=["en-US"]),
        tts=TTS.Azure(voice="en-US-JennyNeural", prosody=TTS.ProsodyConfig(rate=1.1)),
        first_message=GREETING,
    )


async def llm_response_handler(input):
    said = next((m["content"] for m in reversed(input["messages"]) if m["role"] == "user"), "").lower()
    yield ANSWER if ("open" in said or "time" in said) else AGAIN


agent = Agent(id="azure-speech-agent", configure_session=configure_session, llm_response_handler=llm_response_handler)
