"""Logging set-up that keeps phone numbers and secrets out of log files.

Callers' numbers are personal data: log lines show at most the last four digits. A filter on the root handler
scrubs anything that looks like a phone number or a Twilio auth token even when a library logs it.
"""

from __future__ import annotations

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


def configure_logging(level: str = "info") -> None:
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        handler.addFilter(RedactingFilter())
        root.handlers[:] = [handler]
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # faster-whisper logs every utterance's duration at INFO: noise at 50 calls.
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, root.level))
