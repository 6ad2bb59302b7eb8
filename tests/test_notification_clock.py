"""A user's local clock (jobs/notifications/clock.py): quiet hours and digest close times,
in tables across the 2026 daylight-saving changes.

Europe/Berlin: 03-29 01:00Z (02:00 CET -> 03:00 CEST), 10-25 01:00Z (03:00 CEST -> 02:00 CET).
America/New_York: 03-08 07:00Z (02:00 EST -> 03:00 EDT), 11-01 06:00Z (02:00 EDT -> 01:00 EST).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from jobs.notifications.clock import (
    digest_closes_at,
    local_label,
    next_full_hour,
    quiet_interval,
    quiet_until,
)
from jobs.notifications.models import QuietHours

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def quiet(start: str, end: str) -> QuietHours:
    return QuietHours.model_validate({"start": start, "end": end})


NIGHT = quiet("22:00", "07:00")

# (quiet hours, zone, now (UTC), when they end (UTC) or None when it is not quiet)
QUIET_TABLE = [
    # Across midnight on an ordinary day, and a same-day interval.
    (NIGHT, BERLIN, "2026-06-15 19:59", None),
    (NIGHT, BERLIN, "2026-06-15 20:00", "2026-06-16 05:00"),
    (NIGHT, BERLIN, "2026-06-16 04:59", "2026-06-16 05:00"),
    (NIGHT, BERLIN, "2026-06-16 05:00", None),
    (quiet("13:00", "14:00"), BERLIN, "2026-06-15 10:59", None),
    (quiet("13:00", "14:00"), BERLIN, "2026-06-15 11:30", "2026-06-15 12:00"),
    (quiet("13:00", "14:00"), BERLIN, "2026-06-15 12:00", None),
    # Spring: the night is an hour shorter, and ends at 07:00 summer time.
    (NIGHT, BERLIN, "2026-03-28 20:59", None),
    (NIGHT, BERLIN, "2026-03-28 21:00", "2026-03-29 05:00"),
    (NIGHT, BERLIN, "2026-03-29 01:30", "2026-03-29 05:00"),
    (NIGHT, BERLIN, "2026-03-29 05:00", None),
    (NIGHT, NEW_YORK, "2026-03-08 02:59", None),
    (NIGHT, NEW_YORK, "2026-03-08 03:00", "2026-03-08 11:00"),
    (NIGHT, NEW_YORK, "2026-03-08 07:00", "2026-03-08 11:00"),
    (NIGHT, NEW_YORK, "2026-03-08 11:00", None),
    # Autumn: an hour longer, quiet through both passes of the repeated hour.
    (NIGHT, BERLIN, "2026-10-24 20:00", "2026-10-25 06:00"),
    (NIGHT, BERLIN, "2026-10-25 00:30", "2026-10-25 06:00"),
    (NIGHT, BERLIN, "2026-10-25 01:30", "2026-10-25 06:00"),
    (NIGHT, BERLIN, "2026-10-25 06:00", None),
    (NIGHT, NEW_YORK, "2026-11-01 01:59", None),
    (NIGHT, NEW_YORK, "2026-11-01 02:00", "2026-11-01 12:00"),
    (NIGHT, NEW_YORK, "2026-11-01 05:30", "2026-11-01 12:00"),
    (NIGHT, NEW_YORK, "2026-11-01 06:30", "2026-11-01 12:00"),
    (NIGHT, NEW_YORK, "2026-11-01 12:00", None),
    # An end inside the skipped hour: the first valid time after the gap (03:00 summer time).
    (quiet("23:00", "02:30"), BERLIN, "2026-03-28 22:30", "2026-03-29 01:00"),
    (quiet("23:00", "02:30"), BERLIN, "2026-03-29 00:59", "2026-03-29 01:00"),
    (quiet("23:00", "02:30"), BERLIN, "2026-03-29 01:00", None),
    (quiet("22:00", "02:30"), NEW_YORK, "2026-03-08 05:00", "2026-03-08 07:00"),
    # An end inside the repeated hour: the first pass ends the night; the second is not quiet.
    (quiet("23:00", "02:30"), BERLIN, "2026-10-24 21:30", "2026-10-25 00:30"),
    (quiet("23:00", "02:30"), BERLIN, "2026-10-25 01:10", None),
    (quiet("23:00", "02:30"), BERLIN, "2026-10-25 01:40", None),
    (quiet("22:00", "01:30"), NEW_YORK, "2026-11-01 04:00", "2026-11-01 05:30"),
    (quiet("22:00", "01:30"), NEW_YORK, "2026-11-01 06:10", None),
    # A start inside the skipped hour begins at the end of the gap, once.
    (quiet("02:30", "06:00"), BERLIN, "2026-03-29 00:59", None),
    (quiet("02:30", "06:00"), BERLIN, "2026-03-29 01:00", "2026-03-29 04:00"),
    (quiet("02:30", "06:00"), NEW_YORK, "2026-03-08 06:59", None),
    (quiet("02:30", "06:00"), NEW_YORK, "2026-03-08 07:00", "2026-03-08 10:00"),
    # A start inside the repeated hour begins at its first pass.
    (quiet("02:30", "06:00"), BERLIN, "2026-10-25 00:29", None),
    (quiet("02:30", "06:00"), BERLIN, "2026-10-25 00:30", "2026-10-25 05:00"),
    (quiet("02:30", "06:00"), BERLIN, "2026-10-25 01:30", "2026-10-25 05:00"),
    (quiet("01:30", "06:00"), NEW_YORK, "2026-11-01 05:29", None),
    (quiet("01:30", "06:00"), NEW_YORK, "2026-11-01 05:30", "2026-11-01 11:00"),
]


@pytest.mark.parametrize(("hours", "tz", "now", "until"), QUIET_TABLE)
def test_quiet_hours_end(hours: QuietHours, tz: ZoneInfo, now: str, until: str | None) -> None:
    """Whether it is quiet now in the user's zone, and when it ends."""
    assert quiet_until(hours, tz, utc(now)) == (None if until is None else utc(until))


def test_a_quiet_night_lasts_its_real_length_across_both_changes() -> None:
    """22:00-07:00 is 9 hours, 8 on the spring night and 10 on the autumn night."""
    lengths = {
        day: quiet_interval(NIGHT, BERLIN, utc(day)) for day in ("2026-03-29 00:00", "2026-10-25 00:00")
    }
    spring, autumn = lengths["2026-03-29 00:00"], lengths["2026-10-25 00:00"]
    assert spring is not None and spring[1] - spring[0] == timedelta(hours=8)
    assert autumn is not None and autumn[1] - autumn[0] == timedelta(hours=10)
    assert quiet_until(None, BERLIN, utc("2026-06-16 01:00")) is None


# (zone, after (UTC), the next instant the local clock shows HH:00 (UTC))
FULL_HOURS = [
    (BERLIN, "2026-06-15 10:20", "2026-06-15 11:00"),
    (BERLIN, "2026-06-15 10:00", "2026-06-15 11:00"),
    (ZoneInfo("Asia/Kolkata"), "2026-06-15 10:15", "2026-06-15 10:30"),  # UTC+05:30
    (BERLIN, "2026-03-29 00:30", "2026-03-29 01:00"),  # 01:30 CET -> 03:00 CEST
    (BERLIN, "2026-10-25 00:30", "2026-10-25 01:00"),  # 02:30 CEST -> 02:00 CET
    (BERLIN, "2026-10-25 01:30", "2026-10-25 02:00"),  # 02:30 CET -> 03:00 CET
    (NEW_YORK, "2026-03-08 06:30", "2026-03-08 07:00"),  # 01:30 EST -> 03:00 EDT
    (NEW_YORK, "2026-11-01 05:30", "2026-11-01 06:00"),  # 01:30 EDT -> 01:00 EST
    # Lord Howe moves its clocks by half an hour: 01:45 -> (02:30) -> 03:00.
    (ZoneInfo("Australia/Lord_Howe"), "2026-10-03 15:15", "2026-10-03 16:00"),
]


@pytest.mark.parametrize(("tz", "after", "expected"), FULL_HOURS)
def test_hourly_digest_closes_at_the_next_local_full_hour(tz: ZoneInfo, after: str, expected: str) -> None:
    """An hourly digest closes at the next HH:00 of the user's clock, never more than an hour on."""
    closes = digest_closes_at("hourly", tz, utc(after), window_s=300, digest_at=None)
    assert closes == next_full_hour(tz, utc(after)) == utc(expected)
    assert closes.astimezone(tz).minute == 0 and closes - utc(after) <= timedelta(hours=1)


# (zone, digest_at, opened (UTC), closes (UTC))
DAILY = [
    (BERLIN, "08:00", "2026-06-15 05:00", "2026-06-15 06:00"),
    (BERLIN, "08:00", "2026-06-15 10:00", "2026-06-16 06:00"),
    (BERLIN, "08:00", "2026-06-15 06:00", "2026-06-16 06:00"),  # opened as one closes: the next
    # In the skipped spring hour: at the first valid time after the gap, then as usual.
    (BERLIN, "02:30", "2026-03-28 12:00", "2026-03-29 01:00"),
    (BERLIN, "02:30", "2026-03-29 01:00", "2026-03-30 00:30"),
    (NEW_YORK, "02:30", "2026-03-07 12:00", "2026-03-08 07:00"),
    (NEW_YORK, "02:30", "2026-03-08 07:00", "2026-03-09 06:30"),
    # In the repeated autumn hour: once, at the first pass; not again at the second.
    (BERLIN, "02:30", "2026-10-24 12:00", "2026-10-25 00:30"),
    (BERLIN, "02:30", "2026-10-25 00:45", "2026-10-26 01:30"),
    (NEW_YORK, "01:30", "2026-10-31 12:00", "2026-11-01 05:30"),
    (NEW_YORK, "01:30", "2026-11-01 05:45", "2026-11-02 06:30"),
]


@pytest.mark.parametrize(("tz", "at", "opened", "closes"), DAILY)
def test_daily_digest_closes_at_digest_at_local(tz: ZoneInfo, at: str, opened: str, closes: str) -> None:
    """A daily digest closes at the next digest_at of the user's clock, once a day."""
    digest_at = time.fromisoformat(at)
    assert digest_closes_at("daily", tz, utc(opened), window_s=300, digest_at=digest_at) == utc(closes)


def test_window_digest_closes_a_window_after_its_first_item() -> None:
    """The window runs from the first item held, not from the clock; off has no close time."""
    opened = utc("2026-06-15 10:02:17")
    assert digest_closes_at("window", BERLIN, opened, window_s=300, digest_at=None) == utc(
        "2026-06-15 10:07:17"
    )
    with pytest.raises(ValueError, match="no close time"):
        digest_closes_at("off", BERLIN, opened, window_s=300, digest_at=None)
    with pytest.raises(ValueError, match="needs digest_at"):
        digest_closes_at("daily", BERLIN, opened, window_s=300, digest_at=None)


def test_local_label_shows_the_date_only_when_a_day_or_more_away() -> None:
    """'07:00 Europe/Berlin' for today and tomorrow morning; the date when further."""
    now = utc("2026-06-15 21:00")
    assert local_label(utc("2026-06-16 05:00"), BERLIN, now) == "07:00 Europe/Berlin"
    assert local_label(utc("2026-06-20 05:00"), BERLIN, now) == "2026-06-20 07:00 Europe/Berlin"
