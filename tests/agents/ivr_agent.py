"""The agent of the keypad and transfer tests: a scripted "LLM" that navigates a phone menu with ``send_dtmf``
(1 for sales, then 2 for new orders) and hands a caller who asks for a person to the desk with ``transfer_call``
(caller ID, ring timeout and a whisper from the session's settings)."""

from __future__ import annotations

import json
from typing import Any

from telebridge import VAD, Agent, SessionConfig

WHISPER = "Incoming transfer from the Acme line: <priority> caller & co."
CONNECTING = "Connecting you to the desk now."


async def configure_session(input: Any) -> SessionConfig:
    return SessionConfig(
        initial_messages=[{"role": "system", "content": "You navigate phone menus."}],
        vad=VAD.Silero(min_silence_duration=0.4),
        builtin_tools=["send_dtmf", "transfer_call"],
        transfer_targets={"desk": "+15557654321"},
        transfer_timeout=20,
        transfer_whisper=WHISPER,
        session_data={"heard": []},
    )


def _tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": f"call_{name}", "type": "function",
         "function": {"name": name, "arguments": json.dumps(arguments)}}
    ]}}]}


async def llm_response_handler(input: Any):
    messages = input["messages"]
    last = messages[-1]
    if last["role"] == "tool":
        if last.get("name") == "transfer_call":
            yield CONNECTING
        return  # after pressing keys: stay quiet and listen for the next prompt
    said = str(last.get("content") or "").lower()
    input["session_data"]["heard"].append(said)
    if "person" in said or "human" in said:
        yield _tool_call("transfer_call", {"to": "desk"})
    elif "order" in said:
        yield _tool_call("send_dtmf", {"digits": "2"})
    elif "sales" in said:
        yield _tool_call("send_dtmf", {"digits": "1"})


agent = Agent(id="ivr-test", configure_session=configure_session, llm_response_handler=llm_response_handler)
