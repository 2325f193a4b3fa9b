"""The agent of the outbound-call tests: greets the callee by the name in the call's data, leaves a voicemail
(unless the data says ``voicemail=no``), and records what it was told in ``session_data``."""

from telebridge import VAD, Agent, SessionConfig

GREETING = "Hi {name}, this is Dana from Acme Dental about your appointment."
VOICEMAIL = "Hi {name}, this is Dana from Acme Dental. Please call us back. Goodbye."
ANSWER = "Great, see you then. Goodbye."



async def configure_session(input):
    data = input["custom_data"]
    name = data.get("name", "there")
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are an appointment reminder."}],
        vad=VAD.Silero(),
        first_message=GREETING.format(name=name),
        voicemail_message=None if data.get("voicemail") == "no" else VOICEMAIL.format(name=name),
        callee_greeting_timeout=3.0,
    )


async def llm_response_handler(input):
    yield ANSWER


agent = Agent(id="outbound-test", configure_session=configure_session, llm_response_handler=llm_response_handler)
