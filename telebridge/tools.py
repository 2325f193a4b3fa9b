"""Built-in tools an agent may opt into: ``end_call``, ``transfer_call`` and ``send_dtmf``.

Opt in with ``SessionConfig(builtin_tools=["end_call", "transfer_call"], transfer_targets={"sales": "+1555…"})``
and give the LLM their schemas (``builtin_tool_schemas(config)``) next to your own tools. telebridge adds the
functions to the call's tool set; the agent's own tool of the same name wins.

Why they only *request* the action: the LLM usually calls ``end_call`` in the same breath as "Goodbye!", and the
caller must hear that goodbye before the line goes dead. The tool tells the turn engine to wind down; the engine
lets the current reply play out, adds a goodbye (``goodbye_message`` / ``transfer_message``) only if the agent
said nothing, and then hangs up or transfers through Twilio's REST API.

Why an allow-list for transfers: a transfer target that comes from an LLM is attacker-controlled text (prompt
injection can make an agent "transfer" callers to a premium-rate number). ``transfer_call`` only dials the
numbers or SIP URIs listed in ``transfer_targets``, by name or by exact number.

Why ``send_dtmf`` plays tones in the agent's own audio: see :mod:`telebridge.audio.dtmf`. The keys are checked
(0-9, ``*``, ``#``, ``w`` for a pause; at most 40) before anything is played, and the result tells the LLM
exactly which keys went out, so it can tell a menu's next prompt from its own mistake.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from .audio.dtmf import normalise_digits

log = logging.getLogger("telebridge.tools")

__all__ = [
    "END_CALL_SCHEMA", "SEND_DTMF_SCHEMA", "builtin_tool_schemas", "make_builtin_tools", "CallActions",
    "resolve_target",
]

END_CALL_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "end_call",
        "description": "Hang up the phone call once the conversation is over. Say goodbye in the same reply.",
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why the call is ending (for the logs)."}},
            "required": [],
        },
    },
}


SEND_DTMF_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "send_dtmf",
        "description": "Press keys on the phone keypad, e.g. to choose an option in an automated phone menu. "
        "The tones play right after anything you say in the same reply; then wait for the menu's next prompt.",
        "parameters": {
            "type": "object",
            "properties": {
                "digits": {
                    "type": "string",
                    "description": "The keys to press, in order: 0-9, * and #; w waits half a second. "
                    "Examples: '1', '2', '4155550123#'.",
                }
            },
            "required": ["digits"],
        },
    },
}


def _transfer_schema(targets: Mapping[str, str]) -> dict[str, Any]:
    names = sorted(targets)
    to: dict[str, Any] = {"type": "string", "description": "Who to transfer the caller to."}
    if names:
        to["enum"] = names
    return {
        "type": "function",
        "function": {
            "name": "transfer_call",
            "description": "Transfer the caller to a person or department. Tell the caller you are transferring them.",
            "parameters": {"type": "object", "properties": {"to": to}, "required": ["to"]},
        },
    }


def builtin_tool_schemas(config: Any) -> list[dict[str, Any]]:
    """OpenAI tool schemas for the built-in tools ``config`` (a SessionConfig) opted into."""
    schemas: list[dict[str, Any]] = []
    for name in config.builtin_tools:
        if name == "end_call":
            schemas.append(END_CALL_SCHEMA)
        elif name == "transfer_call":
            schemas.append(_transfer_schema(config.transfer_targets))
        elif name == "send_dtmf":
            schemas.append(SEND_DTMF_SCHEMA)
    return schemas


def resolve_target(to: str, targets: Mapping[str, str]) -> str | None:
    """The number/URI for ``to`` (a target name, case-insensitive, or exactly one of the listed numbers)."""
    wanted = to.strip()
    for name, number in targets.items():
        if wanted.lower() == name.lower() or wanted == number:
            return number
    return None


class CallActions(Protocol):
    """What the built-in tools ask of the call (implemented by ``CallSession``)."""

    def request_end_call(self, reason: str) -> None: ...

    def request_transfer(self, target: str, name: str) -> None: ...

    async def send_dtmf(self, keys: str) -> bool:
        """Play ``keys`` (normalised, valid) after what the agent has said so far; False if it cannot now."""
        ...


def make_builtin_tools(
    names: Iterable[str], actions: CallActions, targets: Mapping[str, str]
) -> dict[str, Callable[..., Awaitable[str]]]:
    """Per-call tool functions for ``names``, keyed by the name the LLM calls them by."""
    tools: dict[str, Callable[..., Awaitable[str]]] = {}
    wanted = set(names)

    async def end_call(reason: str = "") -> str:
        actions.request_end_call(reason or "end_call")
        return "The call will end after this reply. Say a short goodbye now and ask nothing more."

    async def transfer_call(to: str) -> str:
        number = resolve_target(to, targets)
        if number is None:
            allowed = ", ".join(sorted(targets)) or "none are configured"
            log.warning("transfer_call refused an unlisted target %r", to)
            return f"Error: {to!r} is not a transfer target you may use. Allowed targets: {allowed}."
        name = next((n for n, v in targets.items() if v == number), to)
        actions.request_transfer(number, name)
        return f"The caller will be transferred to {name} after this reply. Tell them briefly; ask nothing more."

    async def send_dtmf(digits: str) -> str:
        try:
            keys = normalise_digits(digits)
        except ValueError as exc:
            return f"Error: nothing was pressed: {exc}."
        if not await actions.send_dtmf(keys):
            return "Error: nothing was pressed: the call is not taking keypad input right now."
        shown = " ".join("(pause)" if key == "w" else key for key in keys)
        return (f"Pressed {shown} on the keypad. Now wait silently for the next prompt; "
                "say something only if a person answers.")

    if "end_call" in wanted:
        tools["end_call"] = end_call
    if "transfer_call" in wanted:
        tools["transfer_call"] = transfer_call
    if "send_dtmf" in wanted:
        tools["send_dtmf"] = send_dtmf
    return tools
