"""Bridget, receptionist at the (made-up) Harbor Dental: the agent telebridge runs when none is given.

It works with no network and no API key: replies come from a small keyword script, streamed in pieces like an
LLM's. Set ``OPENAI_API_KEY`` (or ``TELEBRIDGE_LLM_BASE_URL`` for any OpenAI-compatible server, e.g. a local
one) and the same agent answers with a real LLM instead -- model ``TELEBRIDGE_LLM_MODEL``, default
``gpt-4o-mini`` -- using two tools to check and book appointments. Both modes share the practice's facts below.

It is written exactly like a Jay agent file, so it doubles as an example.
"""

from __future__ import annotations

import asyncio
import os
import re
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from telebridge.agent import Agent
from telebridge.config import VAD
from telebridge.session import ConfigureSessionInput, LLMResponseHandlerInput, SessionConfig

BUSINESS = "Harbor Dental"
GREETING = "Hi, thanks for calling Harbor Dental, this is Bridget. How can I help you today?"
HOURS = "We're open Monday to Friday from 8 a.m. to 6 p.m., and Saturdays from 9 a.m. to 1 p.m. We're closed on Sundays."
ADDRESS = "We're at 14 Harbor Street, right next to the ferry terminal, with free parking behind the building."
PRICES = (
    "A checkup with a cleaning is 120 dollars, a filling starts at 150, and teeth whitening is 300. "
    "We accept most dental insurance plans."
)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ASK_DAY = "What day would work best for you?"
SLOTS = {"monday": "9:30", "tuesday": "11", "wednesday": "2:15", "thursday": "10", "friday": "3:45", "saturday": "9"}

SYSTEM_PROMPT = f"""You are Bridget, the friendly receptionist of {BUSINESS}, answering the phone.
Keep every answer to one to three short spoken sentences: no lists, no markdown, no emoji.
Facts: {HOURS} {ADDRESS} {PRICES}
Use check_availability before offering a time and book_appointment once the caller agrees to one.
In an emergency with heavy bleeding or trouble breathing, tell the caller to hang up and call 911."""


# --- configure_session --------------------------------------------------------------------------------------


def _caller_info(custom_data: dict[str, Any]) -> dict[str, str]:
    """The caller facts Twilio gave us (webhook field names), tidied for speech: "BOSTON" -> "Boston"."""
    fields = {
        "caller_number": "From",
        "caller_name": "CallerName",
        "caller_city": "FromCity",
        "caller_state": "FromState",
        "call_sid": "CallSid",
    }
    info = {key: str(custom_data[name]) for key, name in fields.items() if custom_data.get(name)}
    for key in ("caller_city", "caller_name"):
        if key in info:
            info[key] = info[key].title()
    return info


async def configure_session(input: ConfigureSessionInput) -> SessionConfig:
    caller = _caller_info(input.get("custom_data") or {})
    about_caller = ", ".join(f"{key.removeprefix('caller_')}: {value}" for key, value in caller.items())
    prompt = SYSTEM_PROMPT + (f"\nWhat the phone network tells us about the caller: {about_caller}." if caller else "")
    return SessionConfig(
        initial_messages=[{"role": "system", "content": prompt}],
        vad=VAD.Silero(),
        session_data={"business": BUSINESS, "bookings": [], **caller},
        first_message=GREETING,
        max_nested_function_calls=2,
    )


# --- the scripted receptionist ------------------------------------------------------------------------------

INTENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Order matters: the first intent with a matching keyword wins ("cancel my appointment" is not a booking).
    ("emergency", ("emergency", "pain", "bleeding", "swollen", "swelling", "broken", "knocked", "hurts", "urgent")),
    ("human", ("human", "person", "someone", "somebody", "receptionist", "operator", "manager", "real ")),
    ("cancel", ("cancel", "reschedule", "move my appointment", "change my appointment")),
    ("prices", ("price", "cost", "how much", "insurance", "fee", "expensive", "cheap", "charge")),
    ("booking", ("book", "appointment", "schedule", "come in", "checkup", "check-up", "see the dentist", "slot")),
    ("hours", ("hour", "open", "close", "closing", "when are you")),
    ("location", ("where", "located", "location", "address", "direction", "parking", "find you", "get there")),
    ("goodbye", ("thank", "bye", "that's all", "that is all", "that's it", "have a good")),
    ("hello", (" hello ", " hi ", " hey ", "good morning", "good afternoon")),
)


def _intent(text: str) -> str | None:
    lowered = " " + re.sub(r"[^\w' -]", " ", text.lower()) + " "
    for intent, keywords in INTENTS:
        if any(keyword in lowered for keyword in keywords):
            return intent
    return None


def _day_in(text: str) -> str | None:
    lowered = text.lower()
    for day in WEEKDAYS:
        if day in lowered:
            return day
    for word in ("tomorrow", "today", "next week"):
        if word in lowered:
            return word
    return None


def _booking_reply(day: str, session_data: dict[str, Any]) -> str:
    if day == "sunday":
        return f"Sorry, we're closed on Sundays. {ASK_DAY}"
    slot = SLOTS.get(day, "10")
    when = day.capitalize() if day in WEEKDAYS else day
    session_data.setdefault("bookings", []).append({"day": day, "time": slot})
    return f"Great, I've booked you in for {when} at {slot}. We'll text you a reminder the day before. Anything else?"


def scripted_reply(messages: Sequence[Mapping[str, Any]], session_data: dict[str, Any]) -> str:
    """Bridget's answer to the caller's latest message, without an LLM."""
    said = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "").strip()
    last_agent = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "assistant"), "")
    intent = _intent(said)
    day = _day_in(said)
    if day and (intent in (None, "booking") and (ASK_DAY in last_agent or intent == "booking")):
        return _booking_reply(day, session_data)
    city = session_data.get("caller_city")
    replies = {
        "emergency": "I'm sorry you're in pain. We keep emergency slots open every morning, so we can see you today. "
        "If there's heavy bleeding or trouble breathing, please hang up and call 911.",
        "human": "Of course. All our front desk staff are with patients right now, "
        "so I'll ask someone to call you back within the hour. Is this the best number to reach you?",
        "cancel": "No problem, I can take care of that. Which appointment would you like to change?",
        "prices": PRICES,
        "booking": f"I'd be happy to book that for you. {ASK_DAY}",
        "hours": HOURS,
        "location": ADDRESS + (f" Coming from {city}, just follow the signs to the harbor." if city else ""),
        "goodbye": "You're welcome! Thanks for calling Harbor Dental, and have a lovely day.",
        "hello": "Hi there! I can help with opening hours, booking an appointment, or directions. What do you need?",
    }
    if intent is not None:
        return replies[intent]
    words = re.findall(r"[\w']+", said)
    if words and len(words) <= 8:
        phrase = " ".join(words).lower()
        return f"Sorry, I didn't quite get \"{phrase}\". I can help with opening hours, booking, or directions."

    return "Sorry, I didn't catch that. I can help with opening hours, booking, or directions."


async def _stream_words(text: str, words_per_chunk: int = 3) -> AsyncIterator[str]:
    """Stream a reply in small pieces, the way an LLM would, so the pipeline's chunking is exercised."""
    words = text.split(" ")
    for start in range(0, len(words), words_per_chunk):
        piece = " ".join(words[start : start + words_per_chunk])
        yield piece if start + words_per_chunk >= len(words) else piece + " "
        await asyncio.sleep(0)


# --- the LLM mode -------------------------------------------------------------------------------------------


async def check_availability(day: str) -> dict[str, Any]:
    """The first free slot on ``day`` (a weekday name)."""
    day = day.strip().lower()
    if day == "sunday":
        return {"day": day, "available": False, "reason": "closed on Sundays"}
    return {"day": day, "available": True, "time": SLOTS.get(day, "10")}


async def book_appointment(day: str, time: str, patient_name: str, session_data: dict[str, Any]) -> str:
    """Book a slot; telebridge passes ``session_data`` to tools that ask for it."""
    session_data.setdefault("bookings", []).append({"day": day, "time": time, "name": patient_name})
    return f"Booked {patient_name} on {day} at {time}."


TOOL_SCHEMAS = [
    {
        "type": "function",
        "function": {
            "name": "check_availability",
            "description": "Find the first free appointment slot on a given weekday.",
            "parameters": {
                "type": "object",
                "properties": {"day": {"type": "string", "description": "Weekday name, e.g. Tuesday"}},
                "required": ["day"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_appointment",
            "description": "Book an appointment the caller has agreed to.",
            "parameters": {
                "type": "object",
                "properties": {
                    "day": {"type": "string"},
                    "time": {"type": "string"},
                    "patient_name": {"type": "string"},
                },
                "required": ["day", "time", "patient_name"],
            },
        },
    },
]

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def llm_configured() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("TELEBRIDGE_LLM_BASE_URL"))


def _client() -> Any:
    """One AsyncOpenAI per event loop (its connection pool belongs to the loop); imported only when used."""
    from openai import AsyncOpenAI

    loop = asyncio.get_running_loop()
    if loop not in _clients:
        _clients[loop] = AsyncOpenAI(
            api_key=os.environ.get("OPENAI_API_KEY") or "not-needed",
            base_url=os.environ.get("TELEBRIDGE_LLM_BASE_URL") or None,
        )
    return _clients[loop]


async def llm_response_handler(input: LLMResponseHandlerInput) -> AsyncIterator[Any]:
    if not llm_configured():
        return _stream_words(scripted_reply(input["messages"], input["session_data"]))
    stream: AsyncIterator[Any] = await _client().chat.completions.create(
        model=os.environ.get("TELEBRIDGE_LLM_MODEL", "gpt-4o-mini"),
        messages=input["messages"],
        tools=TOOL_SCHEMAS,
        stream=True,
    )
    return stream


agent = Agent(
    id="harbor-dental-bridget",
    configure_session=configure_session,
    llm_response_handler=llm_response_handler,
    tools=[check_availability, book_appointment],
)
