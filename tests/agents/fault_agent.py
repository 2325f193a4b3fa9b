"""An agent on cloud speech whose providers' origins come with each call (``custom_data``), so that every call of
tests/test_provider_faults.py reaches the fakes through its own fault proxy.

``stt_url``: Deepgram live STT's origin. ``tts``: ``deepgram`` | ``cartesia`` | ``elevenlabs``; ``tts_url``: its
origin; ``echo_canceller``: ``1`` turns the canceller on. Keys come from the environment (``DEEPGRAM_API_KEY``, ``CARTESIA_API_KEY``, ``ELEVENLABS_API_KEY``).
"""

from telebridge import STT, TTS, VAD, Agent, SessionConfig

GREETING = "Hello, this is the pharmacy. How can I help you today?"


def _tts(kind: str, url: str):
    if kind == "cartesia":
        return TTS.Cartesia(voice="a0e99841-438c-4a64-b679-ae501e7d6091", base_url=url)
    if kind == "elevenlabs":
        return TTS.ElevenLabs(voice=TTS.Voice(id="VoiceFault01", name="Test", category="premade"), base_url=url)
    return TTS.Deepgram(base_url=url)


async def configure_session(input):
    custom = input.get("custom_data") or {}
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are a test agent."}],
        vad=VAD.Silero(),
        stt=STT.Deepgram(base_url=custom["stt_url"]),
        tts=_tts(custom.get("tts", "deepgram"), custom["tts_url"]),
        first_message=GREETING,
        echo_canceller=custom.get("echo_canceller") == "1",
    )


async def llm_response_handler(input):
    yield "Sorry, could you say that again?"


agent = Agent(id="fault-agent", configure_session=configure_session, llm_response_handler=llm_response_handler)
