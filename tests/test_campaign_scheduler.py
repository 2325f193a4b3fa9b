"""The campaign scheduler, sans I/O, with synthetic time: concurrency, calls per second, retries with backoff,
quiet hours (in the contact's zone), stopping."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from telebridge.outbound.campaign.quiet import QuietHours, contact_zone, local_zone
from telebridge.outbound.campaign.scheduler import Dial, Done, Policy, Scheduler, Wait

NEW_YORK = ZoneInfo("America/New_York")


def at(text: str, zone=NEW_YORK) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def scheduler(rows: int, zone=None, **policy) -> Scheduler:
    s = Scheduler(Policy(**policy))
    for r in range(rows):
        s.add(r, zone=zone)
    return s


def test_concurrency_caps_calls_in_flight():
    s = scheduler(5, concurrency=2, cps=100)
    assert s.next(0.0) == Dial(0, 1)
    assert s.next(0.01) == Dial(1, 1)
    assert s.next(0.02) == Wait(None)  # two in flight: wait for an outcome
    assert s.outcome(0, "completed", 5.0) is None
    assert s.next(5.0) == Dial(2, 1)
    assert s.in_flight == 2


def test_calls_per_second_spaces_dials():
    s = scheduler(3, concurrency=10, cps=0.5)
    assert s.next(100.0) == Dial(0, 1)
    assert s.next(100.0) == Wait(102.0)
    assert s.next(101.9) == Wait(102.0)
    assert s.next(102.0) == Dial(1, 1)
    assert s.next(103.0) == Wait(104.0)


def test_busy_and_no_answer_are_retried_with_exponential_backoff():
    s = scheduler(1, retries=2, retry_delay=60, cps=100)
    assert s.next(0) == Dial(0, 1)
    assert s.outcome(0, "busy", 10) == 70  # 60 s after the first attempt
    assert s.next(10) == Wait(70)
    assert s.next(70) == Dial(0, 2)
    assert s.outcome(0, "no-answer", 100) == 220  # 120 s after the second
    assert s.next(220) == Dial(0, 3)
    assert s.outcome(0, "failed", 230) is None  # retries used up: final
    assert s.next(230) == Done()


@pytest.mark.parametrize("status", ["completed", "canceled", "invalid", "error", "unknown"])
def test_final_statuses_are_not_retried(status):
    s = scheduler(1, retries=5)
    assert s.next(0) == Dial(0, 1)
    assert s.outcome(0, status, 1) is None
    assert s.next(1) == Done()


def test_retries_resume_from_an_earlier_run():
    s = Scheduler(Policy(retries=2, retry_delay=60))
    s.add(0, attempts=2, not_before=500.0)  # two attempts made by an earlier run; retry due at 500
    assert s.next(100) == Wait(500.0)
    assert s.next(500) == Dial(0, 3)
    assert s.outcome(0, "busy", 510) is None  # the third attempt was the last


def test_a_retry_does_not_hold_up_other_rows():
    s = scheduler(3, retry_delay=60, cps=100)
    assert s.next(0) == Dial(0, 1)
    s.outcome(0, "busy", 1)
    assert s.next(1) == Dial(1, 1)
    s.outcome(1, "completed", 2)
    assert s.next(2) == Dial(2, 1)
    s.outcome(2, "completed", 3)
    assert s.next(3) == Wait(61)
    assert s.next(61) == Dial(0, 2)


def test_quiet_hours_hold_dials_until_they_end_in_the_contacts_zone():
    quiet = QuietHours.parse("21:00-09:00")
    s = scheduler(2, zone=NEW_YORK, quiet_hours=quiet, cps=100)
    late = at("2024-03-05T22:30:00")
    assert s.next(late) == Wait(at("2024-03-06T09:00:00"))
    assert s.next(at("2024-03-06T08:59:59")) == Wait(at("2024-03-06T09:00:00"))
    assert s.next(at("2024-03-06T09:00:00")) == Dial(0, 1)
    early = Scheduler(Policy(quiet_hours=quiet))
    early.add(0, zone=NEW_YORK)
    assert early.next(at("2024-03-06T06:15:00")) == Wait(at("2024-03-06T09:00:00"))
    assert early.next(at("2024-03-06T20:59:00")) == Dial(0, 1)


def test_quiet_hours_are_per_contact_zone():
    quiet = QuietHours.parse("21:00-09:00")
    s = Scheduler(Policy(quiet_hours=quiet, concurrency=5, cps=100))
    s.add(0, zone=ZoneInfo("America/Los_Angeles"))
    s.add(1, zone=NEW_YORK)
    now = at("2024-03-05T21:30:00")  # 18:30 in Los Angeles, 21:30 in New York
    assert s.next(now) == Dial(0, 1)
    assert s.next(now + 1) == Wait(at("2024-03-06T09:00:00"))


def test_a_retry_landing_in_quiet_hours_waits_for_morning():
    s = scheduler(1, zone=NEW_YORK, quiet_hours=QuietHours.parse("21:00-09:00"), retry_delay=3600)
    assert s.next(at("2024-03-05T20:30:00")) == Dial(0, 1)
    assert s.outcome(0, "busy", at("2024-03-05T20:31:00")) == at("2024-03-05T21:31:00")
    assert s.next(at("2024-03-05T21:31:00")) == Wait(at("2024-03-06T09:00:00"))


def test_quiet_hours_across_a_daylight_saving_change():
    s = scheduler(1, zone=NEW_YORK, quiet_hours=QuietHours.parse("21:00-09:00"))
    # 2024-03-10 is the spring-forward night in New York: 09:00 local is 13:00 UTC, not 14:00.
    wait = s.next(at("2024-03-09T23:00:00"))
    assert wait == Wait(at("2024-03-10T09:00:00"))
    assert datetime.fromtimestamp(wait.until, ZoneInfo("UTC")).hour == 13


def test_stop_dials_nothing_more_and_is_done_once_live_calls_end():
    s = scheduler(3, concurrency=2, cps=100)
    assert isinstance(s.next(0), Dial) and isinstance(s.next(0.01), Dial)
    s.stop()
    assert s.next(1) == Wait(None)
    s.outcome(0, "completed", 2)
    assert s.next(2) == Wait(None)
    s.outcome(1, "busy", 3)  # would be retried, but the campaign is stopping
    assert s.next(3) == Done()


def test_release_gives_the_row_back_without_using_an_attempt():
    s = scheduler(1, retries=0)
    assert s.next(0) == Dial(0, 1)
    s.release(0, not_before=5.0)
    assert s.next(1) == Wait(5.0)
    assert s.next(5.0) == Dial(0, 1)


def test_in_flight_rows_from_an_earlier_run_count_against_concurrency():
    s = Scheduler(Policy(concurrency=1))
    s.add_in_flight(0, attempts=1)
    s.add(1)
    assert s.next(0) == Wait(None)
    s.outcome(0, "completed", 1)
    assert s.next(1) == Dial(1, 1)


def test_a_whole_synthetic_campaign_respects_both_limits():
    """Drive the scheduler like the runner does, with calls lasting 7 s: never more than 3 at once, never two
    dials less than 1/cps apart, every row dialed exactly once."""
    s = scheduler(40, concurrency=3, cps=2.0)
    now, dials, live = 0.0, [], {}
    while True:
        action = s.next(now)
        if isinstance(action, Dial):
            dials.append((now, action.row))
            live[action.row] = now + 7.0
            assert len(live) <= 3
            continue
        if isinstance(action, Done):
            break
        ends = min(live.values()) if live else None
        now = min(t for t in (action.until, ends) if t is not None)
        for row, end in list(live.items()):
            if end <= now:
                del live[row]
                s.outcome(row, "completed", now)
    times = [t for t, _ in dials]
    assert sorted(r for _, r in dials) == list(range(40))
    assert all(b - a >= 0.5 - 1e-9 for a, b in zip(times, times[1:]))


def test_quiet_hours_parsing():
    q = QuietHours.parse("21:00-09:00")
    assert str(q) == "21:00-09:00" and q.contains(datetime(2024, 1, 1, 23).time())
    assert not q.contains(datetime(2024, 1, 1, 9).time())
    day = QuietHours.parse("12:00-13:30")
    assert day.contains(datetime(2024, 1, 1, 12, 45).time()) and not day.contains(datetime(2024, 1, 1, 13, 30).time())
    for bad in ("21-9", "25:00-09:00", "09:00-09:00", ""):
        with pytest.raises(ValueError):
            QuietHours.parse(bad)


def test_which_zone_a_contacts_quiet_hours_use():
    assert contact_zone("Europe/Paris", "Asia/Tokyo", "+14155550123") == ZoneInfo("Europe/Paris")
    assert contact_zone(None, "Asia/Tokyo", "+14155550123") == ZoneInfo("Asia/Tokyo")
    assert contact_zone(None, None, "+14155550123") == ZoneInfo("America/Los_Angeles")
    assert contact_zone(None, None, "+33612345678") == ZoneInfo("Europe/Paris")
    toll_free = contact_zone(None, None, "+18005550100")  # many zones: the machine's
    assert toll_free.utcoffset(datetime.now()) == local_zone().utcoffset(datetime.now())
