"""``telebridge call``: place one outbound call, print its SID, optionally follow it to its end.

Every failure is one line on stderr and exit code 2 (bad input, configuration) or 1 (Twilio or the network
refused); never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

__all__ = ["add_call_arguments", "run_call"]


def add_call_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, help="the number to call, E.164 (+14155550123)")
    parser.add_argument("--from", dest="from_", required=True, help="your Twilio number (or verified caller ID)")
    parser.add_argument("--agent", help="path/to/agent.py or module:attr the server loads for this call "
                                        "(default: the server's agent)")
    parser.add_argument("--data", action="append", default=[], metavar="KEY=VALUE",
                        help="data for the agent (custom_data), repeatable")
    parser.add_argument("--amd", action="store_true", help="ask Twilio to detect answering machines")
    parser.add_argument("--wait", action="store_true", help="follow the call to its end and print how it went")
    parser.add_argument("--timeout", type=float, default=3600.0, help="with --wait: give up after this many seconds")


def _parse_data(items: list[str]) -> dict[str, str]:
    data: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--data expects KEY=VALUE, got {item!r}")
        data[key.strip()] = value
    return data


def _err(message: str) -> None:
    print(f"telebridge call: {' '.join(str(message).split())}", file=sys.stderr)


async def _run(args: argparse.Namespace, out: Any) -> int:
    from pydantic import ValidationError

    from telebridge.settings import Settings

    from .calls import PlaceCallError, place_call
    from .follow import follow_call

    try:
        data = _parse_data(args.data)
        settings = Settings()
    except (ValueError, ValidationError) as exc:
        _err(exc if not isinstance(exc, ValidationError) else f"bad setting: {exc.errors()[0]['msg']}")
        return 2
    try:
        placed = await place_call(settings, to=args.to, from_=args.from_, data=data, amd=args.amd, agent=args.agent)
    except PlaceCallError as exc:
        _err(exc)
        return 2 if exc.kind in ("invalid_number", "config") else 1
    out(placed.call_sid)
    if not args.wait:
        return 0
    try:
        outcome = await follow_call(settings, placed.call_sid, timeout=args.timeout,
                                    on_status=lambda s: print(f"  {s}", file=sys.stderr))
    except PlaceCallError as exc:
        _err(exc)
        return 1
    summary = f"status={outcome.status}"
    if outcome.duration is not None:
        summary += f" duration={outcome.duration}s"
    if outcome.answered_by:
        summary += f" answered_by={outcome.answered_by}"
    if outcome.ended_reason:
        summary += f" ended={outcome.ended_reason}"
    out(summary)
    for row in outcome.transcript:
        out(f"  {row['role']}: {row['content']}")
    if outcome.timed_out:
        _err(f"gave up waiting after {args.timeout:.0f} s (the call goes on)")
        return 1
    return 0 if outcome.status == "completed" else 1


def run_call(args: argparse.Namespace, *, out: Any = print) -> int:
    try:
        return asyncio.run(_run(args, out))
    except KeyboardInterrupt:
        _err("interrupted (the call, if placed, goes on)")
        return 130
