"""``telebridge simulate``: one simulated inbound call from the command line, with a timed transcript."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from .constants import RATE
from .inbound import simulate_call
from .results import SimulatorError, format_transcript
from .script import Action, Dtmf, Hangup, Play, Say
from .speech import _resample

__all__ = ["add_simulate_arguments", "run_simulate"]


class _InOrder(argparse.Action):
    """Collect --say/--wav/--dtmf into one list in command-line order: that order is the script's order."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        items = list(getattr(namespace, "script_items", None) or [])
        items.append((self.dest, values))
        namespace.script_items = items
        current = list(getattr(namespace, self.dest, None) or [])
        current.append(values)
        setattr(namespace, self.dest, current)


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``telebridge simulate``."""
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="telebridge server to call")
    parser.add_argument(
        "--say", action=_InOrder, metavar="TEXT", help="caller says TEXT (repeatable; after the agent goes quiet)"
    )
    parser.add_argument(
        "--at", action="append", type=float, default=[], metavar="SECONDS",
        help="say the n-th --say at this time instead of waiting for the agent (repeatable, paired in order)",
    )
    parser.add_argument("--wav", action=_InOrder, metavar="FILE", help="caller plays this recording (repeatable)")
    parser.add_argument("--dtmf", action=_InOrder, metavar="DIGIT@SECONDS", help="press a key, e.g. 1@5.0")
    parser.add_argument("--out", metavar="FILE", help="write what the caller heard to this WAV file (8 kHz)")
    parser.add_argument(
        "--auth-token", default=os.environ.get("TWILIO_AUTH_TOKEN"),
        help="sign requests like Twilio (default: $TWILIO_AUTH_TOKEN)",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="hang up after this many seconds")
    parser.add_argument("--quiet", type=float, default=0.8, help="agent silence (s) that counts as 'done talking'")
    parser.add_argument("--custom", action="append", default=[], metavar="K=V", help="extra start customParameters")
    parser.add_argument("--from", dest="from_number", default="+15551230001")
    parser.add_argument("--to", dest="to_number", default="+15559870002")
    parser.add_argument("--webhook-path", default="/twilio/voice")
    parser.add_argument("--public-url", help="sign the webhook for this public base URL (server behind a proxy)")
    parser.add_argument("--no-transcribe", action="store_true", help="skip Whisper on the agent's speech")


def _parse_dtmf(spec: str) -> Dtmf:
    digit, sep, at = spec.partition("@")
    if not sep:
        raise ValueError(f"--dtmf expects DIGIT@SECONDS, got {spec!r}")
    return Dtmf(at=float(at), digit=digit)


def _build_cli_script(args: argparse.Namespace) -> list[Action]:
    quiet = float(args.quiet)
    ats = list(args.at or [])
    says = 0
    script: list[Action] = []
    for kind, value in getattr(args, "script_items", None) or []:
        if kind == "say":
            at = ats[says] if says < len(ats) else None
            says += 1
            script.append(Say(at=at, text=value, after_agent_quiet=None if at is not None else quiet))
        elif kind == "wav":
            from telebridge.audio.wav import read_wav

            samples, rate = read_wav(value)
            script.append(Play(at=None, audio=_resample(samples, int(rate), RATE), after_agent_quiet=quiet))
        elif kind == "dtmf":
            script.append(_parse_dtmf(value))
    script.append(Hangup(after_agent_quiet=quiet))
    return script


def _parse_custom(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--custom expects K=V, got {item!r}")
        out[key] = value
    return out


async def run_simulate(args: argparse.Namespace, *, out: Callable[[str], Any] = print) -> int:
    """``telebridge simulate``: 0 on a clean call, 1 if the server broke the protocol, 2 if setup failed."""
    try:
        script = _build_cli_script(args)
        custom = _parse_custom(args.custom or [])
    except (ValueError, OSError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    try:
        call = await simulate_call(
            args.url,
            script=script,
            auth_token=args.auth_token or None,
            from_number=args.from_number,
            to_number=args.to_number,
            custom_parameters=custom,
            duration=args.duration,
            transcribe=not args.no_transcribe,
            webhook_path=args.webhook_path,
            public_url=args.public_url,
        )
    except (SimulatorError, httpx.HTTPError, OSError) as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    out(format_transcript(call))
    out(
        f"-- call {call.call_sid}: {call.duration:.1f} s, ended by {call.ended_by}, close code {call.close_code}, "
        f"{len(call.events_of('mark'))} mark echo(s), {len(call.events_of('clear'))} clear(s), "
        f"max tick lateness {call.max_tick_lateness * 1000:.0f} ms"
    )
    for warning in call.warnings:
        out(f"warning: {warning}")
    for err in call.protocol_errors:
        out(f"protocol error: {err}")
    if args.out:
        from telebridge.audio.wav import write_wav

        write_wav(args.out, call.heard, RATE)
        out(f"wrote {args.out}")
    return 1 if call.protocol_errors else 0
