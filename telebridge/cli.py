"""The ``telebridge`` command: ``serve`` the agent, or ``simulate`` a phone call against a running server."""

from __future__ import annotations

import os

# Audio DSP here is many small matrix products: BLAS thread pools only add wake-ups and contention with the
# inference threads (measured: 11 ms CPU per call-second at 10 calls). Must be set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from .logs import configure_logging  # noqa: E402

log = logging.getLogger("telebridge.cli")


def _serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from .settings import Settings

    overrides = {k: v for k, v in {"agent": args.agent, "host": args.host, "port": args.port,
                                   "workers": args.workers}.items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:  # one line: the setting and why
        error = exc.errors(include_url=False)[0]
        print(f"telebridge: invalid setting {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    from .memory import configure_allocator

    configure_allocator()  # fewer glibc arenas, here and in the workers (telebridge/memory.py)
    workers = settings.workers or ((os.cpu_count() or 1) if settings.redis_url is not None else 1)
    if workers > 1 and settings.redis_url is None:
        print(f"telebridge: {workers} workers need REDIS_URL (a call's webhooks and stream may reach different "
              "workers, which share calls and tokens through Redis); set REDIS_URL or use --workers 1",
              file=sys.stderr)
        return 2
    if workers == 1:
        from .agent import AgentLoadError
        from .app import create_app
        from .server import run_server

        if settings.workers is None and settings.redis_url is None and (os.cpu_count() or 1) > 1:
            log.info("one worker process (set REDIS_URL to run one per core: --workers N)")
        try:
            app = create_app(settings)
        except (AgentLoadError, ValueError) as exc:
            print(f"telebridge: {exc}", file=sys.stderr)
            return 2
        return 0 if run_server(settings, app=app) else 3
    try:
        settings.signatures_enforced  # noqa: B018 - an inconsistent configuration fails here, once
    except ValueError as exc:
        print(f"telebridge: {exc}", file=sys.stderr)
        return 2
    from .workers import Supervisor, WorkersError

    try:
        return Supervisor(overrides, settings.host, settings.port, workers).run()
    except WorkersError as exc:
        print(f"telebridge: {exc}", file=sys.stderr)
        return 3


def _recordings_show(args: argparse.Namespace) -> int:
    from .recording import read_recording, transcript_lines

    try:
        records = read_recording(args.file)
    except OSError as exc:
        print(f"telebridge: {exc}", file=sys.stderr)
        return 2
    for line in transcript_lines(records):
        print(line)
    return 0


def _voices_list(args: argparse.Namespace) -> int:
    from .settings import Settings
    from .voices.store import VoiceFileError, VoiceStore

    settings = Settings()
    try:
        store = VoiceStore(settings.voices_file, settings.voice_store_dir)
    except VoiceFileError as exc:
        print(f"telebridge: {exc}", file=sys.stderr)
        return 2
    voices = store.all_voices() if args.all else store.listed()
    for voice in voices:
        line = f"{voice.name:<28} {voice.language:<6} {voice.gender:<8}"
        if args.all:
            tts = voice.tts.model_dump(mode="json", exclude={"api_key", "credentials"})
            line += f" good={voice.good} cloned={voice.cloned} tts={tts}"
        print(line)
    return 0


def _has_sansio_ws() -> bool:  # kept for bench/cpu_per_call.py
    from .server import has_sansio_ws

    return has_sansio_ws()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telebridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="answer phone calls with an agent")
    serve.add_argument("--agent", help="path/to/agent.py or package.module:attr (default: the built-in demo)")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1, or TELEBRIDGE_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, or TELEBRIDGE_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the port (default: one per core with "
                       "REDIS_URL, else 1; or TELEBRIDGE_WORKERS). More than one needs REDIS_URL.")
    serve.set_defaults(func=_serve)
    simulate = sub.add_parser("simulate", help="play Twilio and a caller against a running telebridge")
    from .simulator import add_simulate_arguments, run_simulate

    add_simulate_arguments(simulate)
    simulate.set_defaults(func=lambda a: (configure_logging("warning"), asyncio.run(run_simulate(a)))[1])
    call = sub.add_parser("call", help="place an outbound call with the agent (TELEBRIDGE_PUBLIC_URL must reach it)")
    from .outbound.cli import add_call_arguments, run_call

    add_call_arguments(call)
    call.set_defaults(func=lambda a: (configure_logging("error"), run_call(a))[1])
    recordings = sub.add_parser("recordings", help="read conversation recordings")
    rec_sub = recordings.add_subparsers(dest="recordings_command", required=True)
    show = rec_sub.add_parser("show", help="print a recording's transcript")
    show.add_argument("file", help="a .jsonl recording")
    show.set_defaults(func=_recordings_show)
    voices = sub.add_parser("voices", help="the voice store")
    voices_sub = voices.add_subparsers(dest="voices_command", required=True)
    vlist = voices_sub.add_parser("list", help="list voices (TELEBRIDGE_VOICES_FILE and the cloned voices)")
    vlist.add_argument("--all", action="store_true", help="include voices not marked good, and their settings")
    vlist.set_defaults(func=_voices_list)
    from .outbound.numbers_cli import add_numbers_parser

    add_numbers_parser(sub)
    from .doctor_cli import add_doctor_parser

    add_doctor_parser(sub)
    from .outbound.campaign.cli import add_campaign_parser

    add_campaign_parser(sub)
    args = parser.parse_args(argv)
    from .settings import load_env_file

    load_env_file()
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
