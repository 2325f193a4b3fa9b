"""``telebridge doctor`` (the checks are in :mod:`.doctor`). Exit code 1 when any check fails."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

__all__ = ["add_doctor_parser"]


def add_doctor_parser(sub: Any) -> None:
    doctor = sub.add_parser("doctor", help="check settings, the public URL, signatures and numbers, with fixes")
    doctor.add_argument("--number", action="append", metavar="+1…",
                        help="check this number points here (repeatable; default: every number whose voice URL "
                             "is on the public host)")
    doctor.add_argument("--allow-http", action="store_true",
                        help="accept an http:// TELEBRIDGE_PUBLIC_URL (local testing only: Twilio needs https)")
    doctor.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request (default 10)")
    doctor.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import render, run_checks
    from .settings import Settings

    try:
        settings = Settings()
        checks = asyncio.run(run_checks(settings, numbers=args.number, allow_http=args.allow_http,
                                        timeout=args.timeout))
    except ValueError as exc:  # unreadable settings, a malformed --number
        print(f"telebridge: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    for line in render(checks):
        print(line)
    return 1 if any(c.ok is False for c in checks) else 0
