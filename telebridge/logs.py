"""Logging set-up that keeps phone numbers and secrets out of log files.

Callers' numbers are personal data: log lines show at most the last four digits. A filter on the root handler
scrubs anything that looks like a phone number or a Twilio auth token even when a library logs it.

``TELEBRIDGE_LOG_FORMAT=json`` writes one JSON object per line: ``timestamp`` (UTC, ISO 8601), ``level``,
``logger``, ``message``, ``call_sid`` when the line is about a call (the ``call <sid>`` / ``realtime <id>``
convention of our own lines, else the call whose task logged it: :data:`call_sid_var`), ``exception`` when there
is one. The same filter runs first, and the JSON formatter scrubs the message and the traceback once more.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
import re

# "+" and 7+ digits, or 10+ bare digits (possibly split by spaces, dashes, dots or brackets).
_PHONE = re.compile(r"(?<![\w+])(?:\+\d[\d\-\s().]{5,}\d|\(?\d{3}\)?[\-\s.]?\d{3}[\-\s.]?\d{4})(?![\w])")
_TOKENISH = re.compile(r"(?i)(auth[_-]?token|api[_-]?key|signature)(['\"]?\s*[:=]\s*['\"]?)([^\s'\",&]+)")


def mask_number(number: str | None) -> str:
    """``+14155550123`` → ``+*******0123``: enough to tell calls apart, not enough to identify anyone."""
    if not number:
        return ""
    digits = [c for c in number if c.isdigit()]
    if len(digits) <= 4:
        return "*" * len(digits)
    return ("+" if number.startswith("+") else "") + "*" * (len(digits) - 4) + "".join(digits[-4:])


def scrub(text: str) -> str:
    text = _TOKENISH.sub(lambda m: m.group(1) + m.group(2) + "***", text)
    return _PHONE.sub(lambda m: mask_number(m.group(0)), text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logger's bug, not ours to crash on
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record (it may be replaced after set-up)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


# The call (its CallSid, or a realtime session's id) whose task is running: a call's tasks are created in a
# context where it is set (CallSession._spawn), so a library's line logged from them is tied to the call too.
call_sid_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("telebridge_call_sid", default=None)
# "call CA…: …", "call CA… from …", "realtime sess_…: …": a CallSid, or an id holding a digit ("call ended" is none).
_CALL_LINE = re.compile(
    r"^(?:call|realtime) (CA[0-9a-fA-F]{32}|rt_[0-9a-f]{16}|(?=[\w\-.]*\d)[A-Za-z0-9][\w\-.]{2,80}?)(?=[:\s,;]|$)")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def call_context(call_id: str) -> contextvars.Context:
    """A copy of the current context with :data:`call_sid_var` set: run a call's task in it."""
    ctx = contextvars.copy_context()
    ctx.run(call_sid_var.set, call_id)
    return ctx


def _clean(text: str) -> str:
    from .security.redact import redact_secrets  # late: the security package imports the settings

    return redact_secrets(scrub(text))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module docstring."""

    def format(self, record: logging.LogRecord) -> str:
        message = _clean(record.getMessage())
        out: dict[str, str] = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        match = _CALL_LINE.match(message)
        call_sid = match.group(1) if match else call_sid_var.get()
        if call_sid:
            out["call_sid"] = call_sid
        if record.exc_info:
            out["exception"] = _clean(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exception"] = _clean(record.exc_text)
        if record.stack_info:
            out["stack"] = _clean(self.formatStack(record.stack_info))
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """``fmt``: ``text`` (human-readable lines) or ``json`` (``TELEBRIDGE_LOG_FORMAT=json``)."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler = next((h for h in root.handlers if any(isinstance(f, RedactingFilter) for f in h.filters)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.addFilter(RedactingFilter())
        root.handlers[:] = [handler]
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # faster-whisper logs every utterance's duration at INFO: noise at 50 calls.
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, root.level))
