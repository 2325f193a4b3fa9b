"""The results CSV: every contact row as it was in the file, then the campaign's columns.

Added columns (a name already used by the contacts file gets a ``result_`` prefix):

* ``status`` — ``completed`` (answered), ``busy``, ``no-answer``, ``failed``, ``canceled`` (Twilio's final
  statuses, after the last attempt); ``invalid`` (not a phone number, or Twilio said so), ``dnc`` (on the
  do-not-call list), ``duplicate`` (the number appears earlier in the file), ``error`` (Twilio refused the call),
  ``unknown`` (the outcome cannot be known: see the state file's at-most-once rule), ``elsewhere`` (another run of
  the same campaign, sharing ``REDIS_URL``, dials that row); and for a run that was
  stopped: ``pending`` (not dialed yet, or a retry not yet due) and ``live`` (still being followed);
* ``duration`` (seconds, Twilio's), ``answered_by`` (``human`` / ``machine_…`` with ``--amd``),
  ``ended_reason``, ``attempts``, ``call_sid`` (of the last attempt), ``summary`` (from the service's
  ``/v1/calls`` when available).

The file is rewritten whole, atomically, at the end of every run (including an interrupted one), from the
state file: it always describes every row, not just the ones this run dialed.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .contacts import Contact
from .state import RowState

__all__ = ["RESULT_COLUMNS", "write_results"]

RESULT_COLUMNS = ("status", "duration", "answered_by", "ended_reason", "attempts", "call_sid", "summary")


def write_results(path: str | Path, header: list[str], contacts: list[Contact], states: dict[str, RowState]) -> None:
    path = Path(path)
    names = {c: (f"result_{c}" if c in header else c) for c in RESULT_COLUMNS}
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*header, *names.values()])
        for c in contacts:
            st = states.get(c.key)
            writer.writerow([*(c.fields.get(h, "") for h in header), *_result(st, c)])
    os.replace(tmp, path)


def _result(st: RowState | None, c: Contact) -> list[str]:
    if st is None:
        return [c.skip or "pending", "", "", c.problem, "0", "", ""]
    reason = st.ended_reason or ""
    if st.status == "pending" and st.last_status:
        reason = f"last attempt {st.last_status}; retry pending"
    return [st.status, "" if st.duration is None else str(st.duration), st.answered_by or "", reason,
            str(st.attempts), st.call_sid or "", st.summary or ""]
