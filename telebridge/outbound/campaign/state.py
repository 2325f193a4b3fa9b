"""The campaign's SQLite state file (``--state``, stdlib ``sqlite3``): what a re-run resumes from.

One table row per contact, keyed by the contact's content key (:mod:`.contacts`), so rows may be added to the
CSV between runs. A row's ``status`` moves ``pending`` → ``dialing`` → ``live`` → a final status (``completed``,
``busy``, ``no-answer``, ``failed``, ``canceled``, ``invalid``, ``error``, ``unknown``), or back to ``pending`` when
a busy / no-answer / failed call has retries left. Rows never dialed start final: ``invalid``, ``duplicate``,
``dnc``.

**At most once.** ``dialing`` is committed *before* the call is placed and ``live`` (with the call SID) right
after Twilio accepts it. If the process dies between the two, the row stays ``dialing``: whether Twilio placed
the call cannot be known, so the next run marks it ``unknown`` and never dials it again. A contact may thus be
missed after a crash, but is never called twice by it. A ``live`` row is resumed: its call is followed to its end
by SID (and not redialed). Finished rows (any final status) are never dialed again.

Writes are tiny single-row transactions made from the event loop (WAL journal, ``synchronous=NORMAL``):
well under a millisecond each, far below the pace of phone calls.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

__all__ = ["CampaignState", "RowState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    key TEXT PRIMARY KEY,
    row INTEGER NOT NULL,
    status TEXT NOT NULL,
    last_status TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    call_sid TEXT,
    duration INTEGER,
    answered_by TEXT,
    ended_reason TEXT,
    summary TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    call_sid TEXT,
    status TEXT,
    started REAL NOT NULL,
    ended REAL,
    PRIMARY KEY (key, attempt)
);
"""


class RowState(BaseModel):
    key: str
    row: int
    status: str
    last_status: str | None = None
    attempts: int = 0
    next_at: float = 0.0
    call_sid: str | None = None
    duration: int | None = None
    answered_by: str | None = None
    ended_reason: str | None = None
    summary: str | None = None


class CampaignState:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"cannot use {self.path} as the campaign state file: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, *args: Any) -> None:
        with self._db:  # one transaction, committed on exit
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(sql, args)

    def sync(self, contacts: list[Any]) -> dict[str, RowState]:
        """Add new contacts; skip (``dnc`` …) open rows now flagged; resolve rows left ``dialing`` by a crash.
        Returns every contact's state by key."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for c in contacts:
                status = c.skip or "pending"
                self._db.execute(
                    "INSERT INTO rows (key, row, status, ended_reason, updated) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET row = excluded.row",
                    (c.key, c.row, status, c.problem or None, now))
                if c.skip:
                    self._db.execute("UPDATE rows SET status = ?, ended_reason = ?, updated = ? "
                                     "WHERE key = ? AND status = 'pending'", (c.skip, c.problem, now, c.key))
            self._db.execute(
                "UPDATE rows SET status = 'unknown', ended_reason = ?, updated = ? WHERE status = 'dialing'",
                ("interrupted while placing the call: not redialed (at most once)", now))
        return self.states(contacts)

    def states(self, contacts: list[Any]) -> dict[str, RowState]:
        """The state of each of ``contacts`` (that :meth:`sync` has seen), by key. Read only."""
        keys = {c.key for c in contacts}
        return {key: state for key, state in self.all().items() if key in keys}

    def all(self) -> dict[str, RowState]:
        return {r["key"]: RowState(**dict(r)) for r in self._db.execute("SELECT * FROM rows ORDER BY row")}

    def get(self, key: str) -> RowState:
        r = self._db.execute("SELECT * FROM rows WHERE key = ?", (key,)).fetchone()
        return RowState(**dict(r))

    def dialing(self, key: str, attempt: int) -> None:
        """Committed before the call is placed (at most once: see the module docstring)."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("UPDATE rows SET status = 'dialing', attempts = ?, call_sid = NULL, updated = ? "
                             "WHERE key = ?", (attempt, now, key))
            self._db.execute("INSERT OR REPLACE INTO attempts (key, attempt, started) VALUES (?, ?, ?)",
                             (key, attempt, now))

    def live(self, key: str, call_sid: str) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("UPDATE rows SET status = 'live', call_sid = ?, updated = ? WHERE key = ?",
                             (call_sid, time.time(), key))
            self._db.execute("UPDATE attempts SET call_sid = ? WHERE key = ? AND attempt = "
                             "(SELECT attempts FROM rows WHERE key = ?)", (call_sid, key, key))

    def released(self, key: str, attempts: int, next_at: float, reason: str) -> None:
        """No call was placed (Twilio refused before creating one): pending again."""
        self._write("UPDATE rows SET status = 'pending', attempts = ?, next_at = ?, ended_reason = ?, updated = ? "
                    "WHERE key = ?", attempts, next_at, reason, time.time(), key)

    def ended(self, key: str, *, status: str, retry_at: float | None, duration: int | None = None,
              answered_by: str | None = None, ended_reason: str | None = None, summary: str | None = None) -> None:
        """The attempt ended with ``status``: final, or pending again until ``retry_at``."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "UPDATE rows SET status = ?, last_status = ?, next_at = ?, duration = ?, answered_by = ?, "
                "ended_reason = ?, summary = ?, updated = ? WHERE key = ?",
                ("pending" if retry_at is not None else status, status, retry_at or 0.0, duration, answered_by,
                 ended_reason, summary, now, key))
            self._db.execute("UPDATE attempts SET status = ?, ended = ? WHERE key = ? AND attempt = "
                             "(SELECT attempts FROM rows WHERE key = ?)", (status, now, key, key))

    def attempt_history(self, key: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute("SELECT * FROM attempts WHERE key = ? ORDER BY attempt", (key,))]
