"""An agent that picks a cloud STT provider; tests remove that provider's client from the build
(the ``deepgram_not_in_build`` fixture in tests/conftest.py) to see how a call that cannot start ends."""

from telebridge import STT, VAD, Agent, SessionConfig


async def configure_session(input):
    return SessionConfig(initial_messages=[], vad=VAD.Silero(), stt=STT.Deepgram(api_key="dg-test"),
                         first_message="You should never hear this.")


async def llm_response_handler(input):
    yield "never"


agent = Agent(id="cloud-only", configure_session=configure_session, llm_response_handler=llm_response_handler)
