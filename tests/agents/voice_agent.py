"""A short-spoken agent for the realtime, voices and recording tests.

* Phone calls choose its voice with a custom ``<Parameter name="voice">`` (→ ``TTS.Piper(voice=...)``) and
  consent to recording with ``allow_recording=true`` (→ ``session_data["allow_recording"]``).
* Saying "stop recording" withdraws that consent mid-call, as a real agent's tool would.
* Replies are short and fixed, so tests spend little wall time listening.
"""

from telebridge import TTS, VAD, Agent, SessionConfig

GREETING = "Hello there."
HOURS = "We are open every day, from early morning until late evening."
STORY = (
    "Once upon a time there was a little lighthouse on a rocky island. "
    "Every night it sent its beam across the dark water to guide the fishing boats home. "
    "One stormy evening the light began to flicker, and the keeper climbed the long stairs to fix it."
)
STOPPED = "Okay, I have stopped recording."


async def configure_session(input):
    data = input["custom_data"]
    voice = data.get("voice") if data.get("transport") != "realtime" else None
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are a test agent."}],
        vad=VAD.Silero(),
        tts=TTS.Piper(voice=voice) if voice else TTS.Piper(),
        first_message=GREETING,
        session_data={"allow_recording": str(data.get("allow_recording", "")).lower() == "true"},
    )


async def llm_response_handler(input):
    said = next((m["content"] for m in reversed(input["messages"]) if m["role"] == "user"), "").lower()
    if "recording" in said:
        input["session_data"]["allow_recording"] = False
        yield STOPPED
    elif "story" in said:
        yield STORY
    elif "hour" in said or "open" in said:
        yield HOURS
    else:
        yield "Sorry, could you say that again?"


agent = Agent(id="voice-test-agent", configure_session=configure_session, llm_response_handler=llm_response_handler)
