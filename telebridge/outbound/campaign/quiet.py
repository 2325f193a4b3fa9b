"""Quiet hours (``--quiet-hours 21:00-09:00``): local times during which a contact is not called.

**Whose local time.** A contact's quiet hours are counted in, first found:

1. the row's ``timezone`` column (IANA name);
2. ``--timezone`` (IANA name), when given;
3. the number's own timezone, when ``phonenumbers`` maps it to exactly one (``+1 415…`` → America/Los_Angeles;
   a whole-country or ambiguous number such as a US toll-free one maps to several and is not used);
4. the timezone of the machine running the campaign.

Times are compared in that zone's wall-clock time (daylight saving included). A window whose start is later
than its end wraps past midnight (``21:00-09:00``); the end is exclusive: at 09:00 calls may start.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as number_timezones
from pydantic import BaseModel, ConfigDict

__all__ = ["QuietHours", "contact_zone", "local_zone"]

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class QuietHours(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        m = _WINDOW.match(text or "")
        if not m:
            raise ValueError(f"quiet hours {text!r} are not HH:MM-HH:MM (e.g. 21:00-09:00)")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
            raise ValueError(f"quiet hours {text!r}: hours are 00-23 and minutes 00-59")
        if (h1, m1) == (h2, m2):
            raise ValueError(f"quiet hours {text!r} start and end at the same time")
        return cls(start=time(h1, m1), end=time(h2, m2))

    def contains(self, local: time) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_allowed(self, now: float, zone: tzinfo) -> float:
        """``now`` (epoch seconds) if calls are allowed then in ``zone``, else when the quiet hours end."""
        local = datetime.fromtimestamp(now, zone)
        if not self.contains(local.time().replace(tzinfo=None)):
            return now
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        # Wall-clock arithmetic on an aware datetime: re-anchor so DST changes are honoured.
        end = datetime(end.year, end.month, end.day, end.hour, end.minute, tzinfo=zone)
        return max(end.timestamp(), now)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def local_zone() -> tzinfo:
    """The machine's timezone."""
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def contact_zone(column: str | None, configured: str | None, number: str | None) -> tzinfo:
    """The zone a contact's quiet hours are counted in (see the module docstring for the order)."""
    if column:
        return ZoneInfo(column)
    if configured:
        return ZoneInfo(configured)
    if number:
        try:
            zones = number_timezones.time_zones_for_number(phonenumbers.parse(number, None))
        except phonenumbers.NumberParseException:
            zones = ()
        if len(zones) == 1 and zones[0] != number_timezones.UNKNOWN_TIMEZONE:
            try:
                return ZoneInfo(zones[0])
            except (KeyError, ValueError):
                pass
    return local_zone()
