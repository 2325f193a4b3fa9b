"""A short-spoken agent that hears and speaks through OpenAI (STT.OpenAI + TTS.OpenAI); the tests point
``OPENAI_BASE_URL`` at the fake OpenAI server and set ``OPENAI_API_KEY``."""

from telebridge import STT, TTS, VAD, Agent, SessionConfig

GREETING = "Hello, you have reached the flower shop."
ANSWER = "We deliver roses every day before noon."


async def configure_session(input):
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are a test agent."}],
        vad=VAD.Silero(),
        stt=STT.OpenAI(model="gpt-4o-mini-transcribe"),
        tts=TTS.OpenAI(voice="nova", speed=1.1),
        first_message=GREETING,
    )


async def llm_response_handler(input):
    said = next((m["content"] for m in reversed(input["messages"]) if m["role"] == "user"), "").lower()
    yield ANSWER if "deliver" in said or "roses" in said else "Sorry, could you say that again?"


agent = Agent(id="openai-speech-test-agent", configure_session=configure_session,
              llm_response_handler=llm_response_handler)
