"""The agent the turn-taking scenarios call: long, deterministic replies that a caller can talk over.

Per-call settings come from the stream's custom parameters (``custom_data``), so one server serves every
scenario: ``silence_timeout``, ``max_silence_reprompts``, ``max_call_duration``, ``dtmf_interrupt_digit``,
``allow_interruptions``, ``interrupt_word_threshold``. Replies are scripted (no LLM): a tool-calling "LLM" when
the caller says goodbye or asks for sales, so the built-in tools run for real.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from telebridge import Agent, ConfigureSessionInput, LLMResponseHandlerInput, SessionConfig, VAD

GREETING = (
    "Thanks for calling the scenario line. This greeting is long on purpose, so that you can talk over it. "
    "Our office is open from nine in the morning until five in the evening, Monday to Friday. "
    "We are located at fourteen Harbor Street, right next to the ferry terminal. "
    "Parking is free behind the building, and the entrance is on the left. How can I help you today?"
)
LONG_ANSWER = (
    "Let me tell you about our services in some detail. We offer checkups, cleanings, fillings and whitening. "
    "A checkup takes about thirty minutes, and a cleaning takes about forty five minutes. "
    "Most insurance plans are accepted, and we can send the bill directly to your insurer. "
    "Is there anything else you would like to know?"
)
SHORT_ANSWER = (  # custom "answer": "short" (the echo matrix: several replies per call, each with room for echo)
    "A checkup takes about thirty minutes, and a cleaning takes about forty five minutes. "
    "Most insurance plans are accepted, and we can send the bill to your insurer."
)
GOODBYE = "Thank you for calling, have a wonderful day. Goodbye!"
TRANSFER = "Sure, let me put you through to our sales team."
TARGETS = {"sales": "+15557654321"}

_INT_KEYS = ("max_silence_reprompts", "interrupt_word_threshold")
_FLOAT_KEYS = ("silence_timeout", "max_call_duration", "interrupt_time_threshold", "false_interruption_timeout")


def _options(custom: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key in _INT_KEYS:
        if key in custom:
            options[key] = int(custom[key])
    for key in _FLOAT_KEYS:
        if key in custom:
            options[key] = float(custom[key])
    if "dtmf_interrupt_digit" in custom:
        options["dtmf_interrupt_digit"] = custom["dtmf_interrupt_digit"]
    if "echo_canceller" in custom:
        options["echo_canceller"] = custom["echo_canceller"] == "true"
    if "allow_interruptions" in custom:
        options["allow_interruptions"] = custom["allow_interruptions"] == "true"
    return options


async def configure_session(input: ConfigureSessionInput) -> SessionConfig:
    custom = input.get("custom_data") or {}
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You are the scenario agent."}],
        vad=VAD.Silero(min_silence_duration=0.4),
        first_message=GREETING if custom.get("greeting", "long") == "long" else "Hello, how can I help?",
        silence_reprompt="Are you still there?",
        silence_goodbye="I haven't heard from you, so I'll hang up now. Goodbye!",
        max_duration_goodbye="Sorry, we have reached the time limit for this call. Goodbye!",
        builtin_tools=["end_call", "transfer_call"],
        transfer_targets=TARGETS,
        session_data={"scenario": custom.get("scenario", ""), "digits": [], "interrupted": [],
                      "answer": SHORT_ANSWER if custom.get("answer") == "short" else LONG_ANSWER},
        on_dtmf=record_digit,
        **_options(custom),
    )


async def record_digit(input: dict[str, Any]) -> None:
    input["session_data"]["digits"].append((input["digit"], input["call_id"]))


async def on_agent_interrupted(input: dict[str, Any]) -> None:
    input["session_data"]["interrupted"].append((input["message"]["content"], input["call_id"]))


def _tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": f"call_{name}", "type": "function",
             "function": {"name": name, "arguments": json.dumps(arguments)}}
        ]}, "finish_reason": None}]
    }


async def _reply(messages: list[dict[str, Any]], answer: str = LONG_ANSWER) -> AsyncIterator[Any]:
    last = messages[-1]
    if last["role"] == "tool":
        yield GOODBYE if last.get("name") == "end_call" else TRANSFER
        return
    said = str(last.get("content") or "").lower()
    if "keypad" in said:
        digits = said.split("pressed", 1)[-1].split("on the keypad")[0].strip()
        yield f"You pressed {' '.join(digits)}. Thank you."
    elif "bye" in said:
        yield _tool_call("end_call", {"reason": "caller said goodbye"})
    elif "sales" in said:
        yield _tool_call("transfer_call", {"to": "sales"})
    else:
        for sentence in answer.split(". "):
            yield sentence + (" " if sentence.endswith(("?", ".")) else ". ")


async def llm_response_handler(input: LLMResponseHandlerInput) -> AsyncIterator[Any]:
    return _reply(list(input["messages"]), input["session_data"].get("answer", LONG_ANSWER))


agent = Agent(
    id="scenario-agent",
    configure_session=configure_session,
    llm_response_handler=llm_response_handler,
    on_agent_interrupted=on_agent_interrupted,
)
