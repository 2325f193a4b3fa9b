"""TELEBRIDGE_LOG_FORMAT=json (issue 9): one JSON object per line, the call's SID on call lines, numbers masked and
secrets redacted."""

from __future__ import annotations

import io
import json
import logging

from conftest import AUTH_TOKEN, finished_call

from telebridge.logs import JsonFormatter, RedactingFilter, call_context, configure_logging
from telebridge.settings import Settings
from telebridge.simulator import Say, simulate_call

SID = "CA" + "0123456789abcdef" * 2
FROM = "+15551230001"


def emit(logger: str, msg: str, *args, exc: bool = False, context: str | None = None) -> dict:
    """Format one record as the configured handler would (the redacting filter, then the JSON formatter)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger(logger)
    log.addHandler(handler)
    log.propagate, level = False, log.level
    log.setLevel(logging.DEBUG)
    try:
        def write() -> None:
            if exc:
                try:
                    raise RuntimeError(f"provider said no to {FROM} with api_key=sk-live-123456")
                except RuntimeError:
                    log.exception(msg, *args)
            else:
                log.info(msg, *args)
        call_context(context).run(write) if context else write()
    finally:
        log.removeHandler(handler)
        log.propagate = True
        log.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def test_a_line_is_one_json_object_with_the_call_sid():
    line = emit("telebridge.call", "call %s: turn %d latency %.0f ms", SID, 1, 812.4)
    assert set(line) == {"timestamp", "level", "logger", "message", "call_sid"}
    assert line["call_sid"] == SID and line["level"] == "INFO" and line["logger"] == "telebridge.call"
    assert line["message"] == f"call {SID}: turn 1 latency 812 ms"
    assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]
    assert emit("telebridge.realtime", "realtime %s: ended", "rt_0a1b2c3d4e5f6a7b")["call_sid"] == "rt_0a1b2c3d4e5f6a7b"
    assert "call_sid" not in emit("telebridge.runtime", "telebridge ready: agent %r", "demo")
    assert "call_sid" not in emit("telebridge.x", "call ended")


def test_lines_logged_by_a_calls_tasks_carry_its_sid():
    line = emit("some.library", "retrying the request", context=SID)
    assert line["call_sid"] == SID and line["message"] == "retrying the request"


def test_numbers_and_secrets_are_masked_in_messages_and_tracebacks():
    line = emit("telebridge.twilio", "call %s from %s: answering; Authorization: Bearer abc.def auth_token=%s",
                SID, FROM, AUTH_TOKEN)
    assert FROM not in line["message"] and "+*******0001" in line["message"]
    assert "abc.def" not in line["message"] and AUTH_TOKEN not in line["message"]
    failed = emit("telebridge.providers", "call %s: reply failed", SID, exc=True)
    assert failed["call_sid"] == SID and "RuntimeError" in failed["exception"]
    assert FROM not in failed["exception"] and "sk-live-123456" not in failed["exception"]


def test_the_setting():
    assert Settings(_env_file=None).log_format == "text"
    assert Settings(_env_file=None, log_format="json").log_format == "json"


async def test_a_simulated_call_logs_json_lines_with_its_sid(quick_server, auth_token, capsys):
    server = quick_server
    configure_logging("info", "json")  # the conftest fixture gives the root logger back afterwards
    call = await simulate_call(
        server.url, script=[Say(at=None, text="What are your opening hours?", after_agent_quiet=0.8)],
        auth_token=auth_token, from_number=FROM, duration=25, end_when_quiet=1.5, transcribe=False,
    )
    await finished_call(server, call.call_sid)
    logging.getLogger("telebridge.test").info("call %s: checked", call.call_sid)  # the last line is in
    err = capsys.readouterr().err
    records = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line parses
    about = [r for r in records if call.call_sid in r["message"]]
    assert len(about) >= 4, err  # answering, stream started, a turn's latency, ended, ...
    assert all(r.get("call_sid") == call.call_sid for r in about), about
    assert any("latency" in r["message"] for r in about) and any("ended" in r["message"] for r in about)
    assert any("+*******0001" in r["message"] for r in about)  # the webhook line: the caller, masked
    assert FROM not in err and FROM[1:] not in err and AUTH_TOKEN not in err
