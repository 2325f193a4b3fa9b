"""An agent on cloud speech both ways -- Deepgram live STT, ElevenLabs TTS -- for tests/test_providers_e2e.py.

Keys come from ``DEEPGRAM_API_KEY`` / ``ELEVENLABS_API_KEY`` (the test sets them, and points
``deepgram_base_url`` / ``elevenlabs_base_url`` at the local fakes). Every call consents to recording. Replies
are scripted by keyword (no LLM), each sentence of a reply a separate TTS request.
"""

from telebridge import STT, TTS, VAD, Agent, SessionConfig

GREETING = "Hello, this is the dental office."  # one sentence: one ElevenLabs context
HOURS_SENTENCES = ["We are open every day from nine until five.", "On Saturdays we close at noon."]
HOURS = " ".join(HOURS_SENTENCES)
FEES = "A cleaning costs eighty dollars."
SERVICES = (
    "Let me tell you about our services in some detail. We offer checkups, cleanings, fillings and whitening. "
    "A checkup takes about thirty minutes, and a cleaning takes about forty five minutes. "
    "Most insurance plans are accepted, and we can send the bill directly to your insurer. "
    "Is there anything else you would like to know?"
)
APPOINTMENT = "Your next appointment is on Monday at ten."
AGAIN = "Sorry, could you say that again?"
VOICE = TTS.Voice(id="VoiceE2E0001", name="Rachel", category="premade")


async def configure_session(input):
    custom = input.get("custom_data") or {}
    options = {}
    if "false_interruption_timeout" in custom:  # the barge-in test waits longer for the fake's (slow) words
        options["false_interruption_timeout"] = float(custom["false_interruption_timeout"])
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are the dental office's receptionist."}],
        vad=VAD.Silero(),
        stt=STT.Deepgram(),
        tts=TTS.ElevenLabs(voice=VOICE),
        first_message=GREETING,
        session_data={"allow_recording": True},
        **options,
    )


def answer(said: str) -> str:
    said = said.lower()
    # (The appointment first: the barge-in's words, transcribed by the fake Deepgram's Whisper on two busy cores,
    # once carried a "much"/"cost"/"price" as well, and CI's run answered them with the fees.)
    if "appointment" in said:
        return APPOINTMENT
    if "much" in said or "cost" in said or "price" in said:
        return FEES
    if "service" in said:
        return SERVICES
    if "hour" in said or "open" in said:
        return HOURS
    return AGAIN


async def llm_response_handler(input):
    said = next((m["content"] for m in reversed(input["messages"]) if m["role"] == "user"), "")
    for sentence in answer(said).split(". "):
        yield sentence if sentence.endswith(("?", ".")) else sentence + ". "


agent = Agent(id="cloud-e2e-agent", configure_session=configure_session, llm_response_handler=llm_response_handler)
