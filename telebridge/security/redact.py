"""Keep API keys and session tokens out of log lines, including the ones libraries write.

At DEBUG, the WebSocket protocol under uvicorn logs every handshake header (``Authorization``,
``Sec-WebSocket-Protocol`` with a session token); uvicorn logs paths with their query string. The filter is put
on those loggers themselves, so it applies before any handler — a test's capture included — sees the record.
"""

from __future__ import annotations

import logging
import re

_PATTERNS = [
    # a header line: "< Authorization: Bearer …", "Cookie: …"
    (re.compile(r"(?i)\b((?:proxy-)?authorization|cookie|x-api-key)(\s*[:=]\s*)[^\r\n]+"), r"\1\2[redacted]"),
    (re.compile(r"(?i)\b(bearer\s+)[^\s,;\"']+"), r"\1[redacted]"),
    (re.compile(r"(?i)\b((?:telebridge-token|openai-insecure-api-key)\.)[^\s,;\"']+"), r"\1[redacted]"),
    (re.compile(r"\btbst_[A-Za-z0-9_\-]+"), "tbst_[redacted]"),
    (re.compile(r"(?i)([?&](?:token|api_key|key)=)[^&\s\"']+"), r"\1[redacted]"),
]
LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "websockets.server")


def redact_secrets(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class SecretRedactor(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = redact_secrets(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_redaction() -> None:
    """Idempotent: one :class:`SecretRedactor` on each library logger that may print a credential."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, SecretRedactor) for f in logger.filters):
            logger.addFilter(SecretRedactor())
