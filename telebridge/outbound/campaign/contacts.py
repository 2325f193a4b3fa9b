"""The contacts CSV and the do-not-call file.

**Contacts file.** CSV (UTF-8, a BOM is fine; comma, semicolon or tab separated), first line a header. One row
per call:

* the number is the ``phone`` column (else ``to``, else ``phone_number``; names are case-insensitive), in E.164
  form (``+14155550123``) — or national form with ``--region US``;
* an optional ``timezone`` column (IANA name, ``America/Chicago``) says in which timezone the row's quiet hours
  are counted (see :mod:`.quiet`);
* every other column becomes the call's ``data``: it reaches the agent's ``configure_session`` as
  ``custom_data`` (``{"first_name": "Ada", …}``), values as strings. Column names telebridge fills in itself
  (``From``, ``To``, ``CallSid``, …) are refused.

A row whose number is not a valid phone number is not dialed (status ``invalid``); a number already seen
earlier in the file is not dialed again (``duplicate``); a number on the do-not-call file is skipped (``dnc``).
A malformed file (no header, no phone column, a row with more fields than the header, an unknown timezone)
is refused as a whole, with the line number.

**Do-not-call file.** One number per line, E.164 (or national with ``--region``); blank lines and ``#``
comments are ignored; numbers are compared after normalising to E.164.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import BaseModel, ConfigDict

from ..phone import InvalidNumber, e164

__all__ = ["Contact", "ContactsError", "PHONE_COLUMNS", "load_contacts", "load_dnc", "normalize"]

PHONE_COLUMNS = ("phone", "to", "phone_number")
TIMEZONE_COLUMN = "timezone"
# Fallback when telebridge.outbound.calls is unavailable: keys place_call refuses in data.
_RESERVED = {"From", "To", "CallSid", "AccountSid", "Direction", "StreamSid", "custom_parameters", "AnsweredBy"}


class ContactsError(ValueError):
    """The contacts or do-not-call file cannot be used (one line, with the file and line)."""


class Contact(BaseModel):
    model_config = ConfigDict(frozen=True)

    row: int  # 0-based position among the data rows; file line = row + 2
    key: str  # stable across runs: derived from the row's content (see load_contacts)
    fields: dict[str, str]  # every column, as in the file (the results CSV repeats them)
    phone_raw: str
    to: str | None  # E.164, None when invalid
    data: dict[str, str]  # every column but the phone column: the call's data
    timezone: str | None = None
    skip: str | None = None  # "invalid", "duplicate", "dnc": never dialed
    problem: str = ""  # why, for the results CSV


def normalize(raw: str, region: str | None = None) -> str:
    """E.164 for ``raw``; with ``region`` (``US``) national numbers are accepted too. :class:`InvalidNumber`."""
    raw = (raw or "").strip()
    if region and raw and not raw.startswith("+"):
        try:
            parsed = phonenumbers.parse(raw, region.upper())
        except phonenumbers.NumberParseException as exc:
            raise InvalidNumber(f"{raw!r} is not a phone number ({exc})") from None
        raw = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return e164(raw)


def _reserved() -> set[str]:
    try:
        from ..calls import RESERVED_DATA_KEYS
    except ImportError:
        return set(_RESERVED)
    return set(RESERVED_DATA_KEYS)


def _dialect(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        return csv.excel


def load_contacts(path: str | Path, *, region: str | None = None, dnc: set[str] | frozenset[str] = frozenset()
                  ) -> tuple[list[str], list[Contact]]:
    """The header and the contacts of ``path``, or :class:`ContactsError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContactsError(f"cannot read {path}: {exc}") from None
    if not text.strip():
        raise ContactsError(f"{path} is empty: it needs a header line with a 'phone' column")
    reader = csv.reader(text.splitlines(), _dialect(text[:4096]))
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise ContactsError(f"{path}: cannot read the header line ({exc})") from None
    lowered = [h.lower() for h in header]
    if "" in header or len(set(lowered)) != len(lowered):
        raise ContactsError(f"{path}, line 1: column names must be non-empty and distinct (got {header})")
    phone_col = next((header[lowered.index(c)] for c in PHONE_COLUMNS if c in lowered), None)
    if phone_col is None:
        raise ContactsError(f"{path} has no phone column: name one 'phone' or 'to' (columns: {', '.join(header)})")
    tz_col = header[lowered.index(TIMEZONE_COLUMN)] if TIMEZONE_COLUMN in lowered else None
    clash = sorted((set(header) - {phone_col, tz_col}) & _reserved())
    if clash:
        raise ContactsError(f"{path}, line 1: column {clash[0]!r} is reserved (telebridge sets it on every call); "
                            "rename it")
    contacts: list[Contact] = []
    seen_numbers: set[str] = set()
    seen_keys: dict[str, int] = {}
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) > len(header):
                raise ContactsError(f"{path}, line {line}: {len(values)} fields but the header has {len(header)}")
            values = [*values, *[""] * (len(header) - len(values))]
            fields = {h: v.strip() for h, v in zip(header, values)}
            timezone = fields.get(tz_col) if tz_col else None
            if timezone:
                try:
                    ZoneInfo(timezone)
                except (ZoneInfoNotFoundError, ValueError):
                    raise ContactsError(f"{path}, line {line}: unknown timezone {timezone!r} (use an IANA name "
                                        "such as America/New_York)") from None
            contacts.append(_contact(len(contacts), fields, phone_col, tz_col, timezone or None, region, dnc,
                                     seen_numbers, seen_keys))
    except csv.Error as exc:
        raise ContactsError(f"{path}, line {reader.line_num}: {exc}") from None
    if not contacts:
        raise ContactsError(f"{path} has a header but no rows")
    return header, contacts


def _contact(row: int, fields: dict[str, str], phone_col: str, tz_col: str | None, timezone: str | None,
             region: str | None, dnc: set[str] | frozenset[str], seen_numbers: set[str],
             seen_keys: dict[str, int]) -> Contact:
    raw = fields[phone_col]
    skip, problem, to = None, "", None
    try:
        to = normalize(raw, region)
    except InvalidNumber as exc:
        skip, problem = "invalid", str(exc)
    if to is not None and to in dnc:
        skip, problem = "dnc", "on the do-not-call list"
    elif to is not None and to in seen_numbers:
        skip, problem = "duplicate", "the number appears earlier in the file"
    if to is not None:
        seen_numbers.add(to)
    # The key identifies the row across runs even if rows are added or reordered: its content, plus how many
    # identical rows came before it.
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:24]
    occurrence = seen_keys.get(digest, 0)
    seen_keys[digest] = occurrence + 1
    data = {k: v for k, v in fields.items() if k != phone_col and k != tz_col}
    return Contact(row=row, key=f"{digest}-{occurrence}", fields=fields, phone_raw=raw, to=to, data=data,
                   timezone=timezone, skip=skip, problem=problem)


def load_dnc(path: str | Path, *, region: str | None = None) -> frozenset[str]:
    """The do-not-call numbers of ``path`` (E.164), or :class:`ContactsError` naming the bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ContactsError(f"cannot read the do-not-call file {path}: {exc}") from None
    numbers = set()
    for n, line in enumerate(lines, 1):
        entry = line.split("#", 1)[0].strip().strip(",")
        if not entry:
            continue
        try:
            numbers.add(normalize(entry, region))
        except InvalidNumber as exc:
            raise ContactsError(f"{path}, line {n}: {exc}") from None
    return frozenset(numbers)
