"""A short-spoken agent that speaks through ElevenLabs (the tests point it at the fake ElevenLabs)."""

from telebridge import TTS, VAD, Agent, SessionConfig

KEY = "el-agent-key-abcdef012345"
GREETING = "Hello, this is the dental office."
ANSWER = "We are open every day from nine until five."


async def configure_session(input):
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are a test agent."}],
        vad=VAD.Silero(),
        tts=TTS.ElevenLabs(api_key=KEY, voice=TTS.Voice(id="VoiceAbc123", name="Test", category="premade")),
        first_message=GREETING,
    )


async def llm_response_handler(input):
    yield ANSWER


agent = Agent(id="elevenlabs-test-agent", configure_session=configure_session,
              llm_response_handler=llm_response_handler)
