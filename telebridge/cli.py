"""The ``telebridge`` command: ``serve`` the agent, or ``simulate`` a phone call against a running server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .logs import configure_logging

log = logging.getLogger("telebridge.cli")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .agent import AgentLoadError
    from .app import create_app
    from .server import DrainingServer
    from .settings import Settings

    overrides = {k: v for k, v in {"agent": args.agent, "host": args.host, "port": args.port}.items() if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    try:
        app = create_app(settings)
    except (AgentLoadError, ValueError) as exc:
        print(f"telebridge: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws="websockets-sansio" if _has_sansio_ws() else "websockets",
        ws_ping_interval=None,  # Twilio does not answer pings reliably; a dead call ends with its stream
        timeout_graceful_shutdown=5,
        proxy_headers=True,
        forwarded_allow_ips="*",
    )
    server = DrainingServer(config, settings.drain_timeout)
    server.run()
    return 0


def _has_sansio_ws() -> bool:
    try:
        import uvicorn.protocols.websockets.websockets_sansio_impl  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telebridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="answer phone calls with an agent")
    serve.add_argument("--agent", help="path/to/agent.py or package.module:attr (default: the built-in demo)")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1, or TELEBRIDGE_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, or TELEBRIDGE_PORT)")
    serve.set_defaults(func=_serve)
    simulate = sub.add_parser("simulate", help="play Twilio and a caller against a running telebridge")
    from .simulator import add_simulate_arguments, run_simulate

    add_simulate_arguments(simulate)
    simulate.set_defaults(func=lambda a: (configure_logging("warning"), asyncio.run(run_simulate(a)))[1])
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
