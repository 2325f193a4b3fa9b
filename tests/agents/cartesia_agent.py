"""An agent speaking through Cartesia (served by the local fake in tests: ``cartesia_base_url``)."""

from telebridge import TTS, VAD, Agent, SessionConfig

API_KEY = "sk_car_e2e_0123456789abcdef"
GREETING = "Hello, thanks for calling the science museum."
STORY = (
    "Once upon a time there was a little lighthouse on a rocky island. "
    "Every night it sent its beam across the dark water to guide the fishing boats home. "
    "One stormy evening the light began to flicker, and the keeper climbed the long stairs to fix it."
)


async def configure_session(input):
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are a test agent."}],
        vad=VAD.Silero(),
        tts=TTS.Cartesia(api_key=API_KEY, voice="a0e99841-438c-4a64-b679-ae501e7d6091", speed="normal"),
        first_message=GREETING,
    )


async def llm_response_handler(input):
    said = next((m["content"] for m in reversed(input["messages"]) if m["role"] == "user"), "").lower()
    yield STORY if "story" in said else "Sorry, could you say that again?"


agent = Agent(id="cartesia-agent", configure_session=configure_session, llm_response_handler=llm_response_handler)
