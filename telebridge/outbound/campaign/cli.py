"""``telebridge campaign run contacts.csv --from +1…``: argument parsing, wiring, the progress bar, Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["add_campaign_parser"]


def add_campaign_parser(sub: Any) -> None:
    campaign = sub.add_parser("campaign", help="call a list of contacts (CSV) with an agent")
    csub = campaign.add_subparsers(dest="campaign_command", required=True)
    run = csub.add_parser("run", help="dial every row of a contacts CSV; re-run the same command to resume",
                          description="Each row's columns become the call's data; a 'phone' (or 'to') column is "
                                      "the number. State is kept in a SQLite file so a re-run resumes and never "
                                      "dials a finished row twice. Ctrl-C stops dialing and lets live calls "
                                      "finish; a second Ctrl-C quits at once.")
    run.add_argument("contacts", help="the contacts CSV (header line; a 'phone' or 'to' column)")
    run.add_argument("--from", dest="from_", required=True, metavar="+1…", help="caller ID: a number of the account")
    run.add_argument("--agent", help="path/to/agent.py or module:attr (default: the server's agent)")
    run.add_argument("--amd", action="store_true", help="answering-machine detection (fills answered_by)")
    run.add_argument("--concurrency", type=int, default=1, help="calls at the same time (default 1)")
    run.add_argument("--cps", type=float, default=1.0, help="calls started per second at most (default 1)")
    run.add_argument("--retries", type=int, default=2, help="extra attempts after busy/no-answer/failed (default 2)")
    run.add_argument("--retry-delay", type=float, default=300.0,
                     help="seconds before the first retry, doubled for each further one (default 300)")
    run.add_argument("--quiet-hours", metavar="HH:MM-HH:MM",
                     help="no calls in this local-time window, e.g. 21:00-09:00 (counted in the row's 'timezone' "
                          "column, else --timezone, else the number's own zone, else this machine's)")
    run.add_argument("--timezone", help="IANA zone for quiet hours of rows without a 'timezone' column")
    run.add_argument("--dnc", metavar="FILE", help="do-not-call list: one number per line")
    run.add_argument("--region", help="accept national numbers of this country (e.g. US) besides E.164")
    run.add_argument("--out", help="results CSV (default: <contacts>.results.csv)")
    run.add_argument("--state", help="state file (default: <contacts>.campaign.sqlite)")
    run.add_argument("--poll-interval", type=float, default=2.0, help="seconds between call status checks")
    run.add_argument("--campaign", help="the campaign's name in Redis (REDIS_URL): runs with the same name share its "
                                         "rows, each dialed by one of them (default: the contacts file's name and "
                                         "--from)")
    run.set_defaults(func=_run)


def _fail(message: str) -> int:
    print(f"telebridge: {message}", file=sys.stderr)
    return 2


class _Plan:
    """Everything checked before anything is dialed."""

    def __init__(self, args: argparse.Namespace) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from telebridge.settings import Settings

        from ..phone import e164
        from .contacts import load_contacts, load_dnc
        from .quiet import QuietHours
        from .scheduler import Policy

        self.settings = Settings()
        self.from_ = e164(args.from_)
        if not self.settings.public_url:
            raise ValueError("TELEBRIDGE_PUBLIC_URL is not set: Twilio needs this service's https:// address "
                             "to connect the calls")
        quiet = QuietHours.parse(args.quiet_hours) if args.quiet_hours else None
        if args.timezone:
            try:
                ZoneInfo(args.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone {args.timezone!r} (use an IANA name such as "
                                 "America/New_York)") from None
        self.policy = Policy(concurrency=args.concurrency, cps=args.cps, retries=args.retries,
                             retry_delay=args.retry_delay, quiet_hours=quiet)
        dnc = load_dnc(args.dnc, region=args.region) if args.dnc else frozenset()
        self.header, self.contacts = load_contacts(args.contacts, region=args.region, dnc=dnc)
        stem = Path(args.contacts)
        self.out = Path(args.out) if args.out else stem.with_name(stem.stem + ".results.csv")
        self.state_path = Path(args.state) if args.state else stem.with_name(stem.stem + ".campaign.sqlite")
        self.campaign_id = args.campaign or f"{stem.name}:{self.from_}"


class _Bar:
    """The tqdm progress bar (rows finished out of all rows; live calls and counts per status as postfix)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.counts: Counter[str] = Counter()
        self.live_calls = 0

    def start(self, total: int, done: Counter[str]) -> None:
        from tqdm import tqdm

        self.counts = Counter(done)
        self.bar = tqdm(total=total, initial=sum(done.values()), unit="row", desc="campaign", file=sys.stderr,
                        dynamic_ncols=True)
        self._postfix()

    def finished(self, status: str) -> None:
        self.counts[status] += 1
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()

    def live(self, count: int) -> None:
        if count != self.live_calls:
            self.live_calls = count
            self._postfix()

    def message(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join([f"live={self.live_calls}", *(f"{k}={v}" for k, v in
                                                                             sorted(self.counts.items()))]))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def _preflight(settings: Any) -> None:
    """Fail before dialing when Twilio rejects the credentials (one cheap authenticated read)."""
    from telebridge.twilio.client import rest_client

    client, http = rest_client(settings)
    try:
        await client.api.v2010.accounts(settings.twilio_account_sid).incoming_phone_numbers.page_async(page_size=1)
    finally:
        await http.aclose()


async def _campaign(plan: _Plan, args: argparse.Namespace, bar: _Bar) -> tuple[Counter[str], str | None, bool]:
    from .runner import CampaignRunner
    from .state import CampaignState
    from .tracking import RestTracker

    await _preflight(plan.settings)
    from .shared import open_shared

    shared = await open_shared(plan)  # REDIS_URL: dial pacing per account and row claims across runs

    async def dial(contact: Any) -> str:
        from telebridge.outbound.calls import place_call  # lazily: the server's modules are not needed otherwise

        await shared.before_dial(contact.key)
        placed = await place_call(plan.settings, to=contact.to, from_=plan.from_, data=contact.data, amd=args.amd,
                                  agent=args.agent)
        return placed.call_sid

    state = CampaignState(plan.state_path)
    tracker = RestTracker(plan.settings, poll_interval=args.poll_interval)
    runner = CampaignRunner(plan.contacts, state, plan.policy, dial=dial, track=tracker, timezone=args.timezone,
                            progress=bar)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    interrupts = 0

    def on_interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            bar.message("stopping: no new calls; waiting for live calls to end (Ctrl-C again to quit now)")
            runner.stop()
        elif main_task is not None:
            bar.message("quitting: live calls are left running and will be followed by the next run")
            main_task.cancel()

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    cancelled = False
    try:
        counts = await runner.run()
    except asyncio.CancelledError:
        cancelled = True
        counts = Counter(s.status for s in state.states(plan.contacts).values())
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await tracker.aclose()
        await shared.aclose()
        bar.close()
        from .results import write_results

        write_results(plan.out, plan.header, plan.contacts, state.states(plan.contacts))
        state.close()
    return counts, runner.fatal, bool(interrupts) or cancelled


def _run(args: argparse.Namespace) -> int:
    from telebridge.logs import configure_logging

    from ..errors import explain, is_twilio_failure
    from .runner import counts_line

    configure_logging("warning")
    try:
        plan = _Plan(args)
    except ValueError as exc:  # bad CSV, missing column, bad number, bad option, unreadable settings
        return _fail(str(exc).splitlines()[0])
    bar = _Bar()
    try:
        counts, fatal, interrupted = asyncio.run(_campaign(plan, args, bar))
    except KeyboardInterrupt:  # before dialing started (Ctrl-C during the credentials check)
        print("telebridge: interrupted before any call was placed", file=sys.stderr)
        return 130
    except Exception as exc:
        if is_twilio_failure(exc):
            return _fail(explain(exc))
        if isinstance(exc, ValueError):
            return _fail(str(exc).splitlines()[0])
        raise
    print(f"campaign: {counts_line(counts)}; results in {plan.out}")
    if fatal:
        return _fail(f"stopped: {fatal}")
    if interrupted:
        print(f"interrupted: run the same command again to resume (state in {plan.state_path})", file=sys.stderr)
        return 130
    return 0
