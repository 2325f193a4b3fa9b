"""``telebridge numbers list`` and ``telebridge numbers configure`` (the logic is in :mod:`.numbers`)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

__all__ = ["add_numbers_parser"]


def add_numbers_parser(sub: Any) -> None:
    numbers = sub.add_parser("numbers", help="the Twilio account's phone numbers")
    numbers_sub = numbers.add_subparsers(dest="numbers_command", required=True)
    nlist = numbers_sub.add_parser("list", help="each number, its voice URL, and whether it points here")
    nlist.add_argument("--url", help="this service's https:// base URL (default: TELEBRIDGE_PUBLIC_URL)")
    nlist.set_defaults(func=_list)
    conf = numbers_sub.add_parser(
        "configure", help="point a number's voice webhook and status callback at this service")
    conf.add_argument("number", help="the number, in E.164 form (+14155550123)")
    conf.add_argument("--url", help="this service's https:// base URL (default: TELEBRIDGE_PUBLIC_URL)")
    conf.add_argument("--dry-run", action="store_true", help="print the change without making it")
    conf.set_defaults(func=_configure)


def _fail(message: str) -> int:
    print(f"telebridge: {message}", file=sys.stderr)
    return 2


def _failure(exc: Exception) -> int:
    """Known failures (bad input, Twilio's refusals, no network) as one line; anything else is a bug: raise."""
    from .errors import explain, is_twilio_failure

    if is_twilio_failure(exc):
        return _fail(explain(exc))
    if isinstance(exc, (ValueError, LookupError)):
        return _fail(str(exc))
    raise exc


def _settings() -> Any:
    from telebridge.settings import Settings

    return Settings()


def _base_url(args: argparse.Namespace, settings: Any, *, required: bool) -> str | None:
    url = (args.url or settings.public_url or "").strip().rstrip("/")
    if not url:
        if required:
            raise ValueError("no URL: pass --url https://your-host or set TELEBRIDGE_PUBLIC_URL")
        return None
    if not url.startswith("https://"):
        raise ValueError(f"{url} is not https://: Twilio needs an https webhook and a wss:// media stream")
    return url


def _list(args: argparse.Namespace) -> int:
    from .numbers import list_numbers

    try:
        settings = _settings()
        base = _base_url(args, settings, required=False)
        numbers = asyncio.run(list_numbers(settings))
    except Exception as exc:
        return _failure(exc)
    if not numbers:
        print("no phone numbers on this account")
        return 0
    rows = [("NUMBER", "FRIENDLY NAME", "VOICE URL", "POINTS HERE")]
    rows += [(n.phone_number, n.friendly_name, n.voice_url or "-", n.where(base)) for n in numbers]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
    return 0


def _configure(args: argparse.Namespace) -> int:
    from .numbers import configure_number

    try:
        settings = _settings()
        base = _base_url(args, settings, required=True)
        assert base is not None
        plan = asyncio.run(configure_number(settings, args.number, base, dry_run=args.dry_run))
    except Exception as exc:
        return _failure(exc)
    number = plan.number.phone_number
    for warning in plan.warnings:
        print(f"warning: {number}: {warning}", file=sys.stderr)
    if not plan.needed:
        print(f"{number} already points at {base} (nothing to change)")
        return 0
    verb = "would set" if args.dry_run else "set"
    for change in plan.changes:
        print(f"{number}: {verb} {change.field}: {change.old or '(empty)'} -> {change.new}")
    if args.dry_run:
        print("dry run: nothing was changed")
    return 0
