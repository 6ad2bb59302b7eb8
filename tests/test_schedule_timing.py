"""Next fire times (worker/scheduler/timing.py): tables across the 2026 DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from worker.scheduler.timing import Cron, Every, iso, jitter_offset_s, next_fire_time, next_fire_times

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (cron, zone, search from (UTC), the next fires (UTC)). 2026 changes: Europe/Berlin
# 03-29 01:00Z (02:00 -> 03:00) and 10-25 01:00Z (03:00 -> 02:00); America/New_York
# 03-08 07:00Z (02:00 -> 03:00) and 11-01 06:00Z (02:00 -> 01:00).
TABLE = [
    # Spring, a fixed time inside the gap: once, at the first valid instant after it (03:00 CEST).
    ("30 2 * * *", BERLIN, "2026-03-28 12:00", ["2026-03-29 01:00", "2026-03-30 00:30", "2026-03-31 00:30"]),
    ("30 2 * * *", NEW_YORK, "2026-03-07 12:00", ["2026-03-08 07:00", "2026-03-09 06:30"]),
    # Several fixed times inside one gap fire once.
    (
        "*/20 2 * * *",
        NEW_YORK,
        "2026-03-08 00:00",
        ["2026-03-08 07:00", "2026-03-09 06:00", "2026-03-09 06:20"],
    ),
    # Spring, real-time entries: the missing quarter hours do not exist, nothing doubles at 03:00.
    (
        "*/15 * * * *",
        BERLIN,
        "2026-03-29 00:30",
        ["2026-03-29 00:45", "2026-03-29 01:00", "2026-03-29 01:15", "2026-03-29 01:30"],
    ),
    (
        "*/15 * * * *",
        NEW_YORK,
        "2026-03-08 06:30",
        ["2026-03-08 06:45", "2026-03-08 07:00", "2026-03-08 07:15"],
    ),
    ("0 * * * *", BERLIN, "2026-03-29 00:00", ["2026-03-29 01:00", "2026-03-29 02:00"]),
    # Autumn, a fixed time inside the repeated hour: once, at its first occurrence.
    ("30 2 * * *", BERLIN, "2026-10-24 12:00", ["2026-10-25 00:30", "2026-10-26 01:30"]),
    ("30 1 * * *", NEW_YORK, "2026-10-31 12:00", ["2026-11-01 05:30", "2026-11-02 06:30"]),
    # ... also when searching from inside the repeated hour's second pass.
    ("30 1 * * *", NEW_YORK, "2026-11-01 06:10", ["2026-11-02 06:30"]),
    (
        "*/20 1 * * *",
        NEW_YORK,
        "2026-11-01 04:50",
        ["2026-11-01 05:00", "2026-11-01 05:20", "2026-11-01 05:40", "2026-11-02 06:00"],
    ),
    # Autumn, real-time entries: each real quarter hour and each real hour of the repeated hour.
    (
        "*/15 * * * *",
        BERLIN,
        "2026-10-25 00:30",
        ["2026-10-25 00:45", "2026-10-25 01:00", "2026-10-25 01:15", "2026-10-25 01:30", "2026-10-25 01:45"],
    ),
    ("0 * * * *", BERLIN, "2026-10-24 23:30", ["2026-10-25 00:00", "2026-10-25 01:00", "2026-10-25 02:00"]),
    ("0 * * * *", NEW_YORK, "2026-11-01 04:30", ["2026-11-01 05:00", "2026-11-01 06:00", "2026-11-01 07:00"]),
    # From inside the first pass, the second pass's earlier wall times still come next in real time.
    ("*/15 * * * *", NEW_YORK, "2026-11-01 05:50", ["2026-11-01 06:00", "2026-11-01 06:15"]),
    # Crontab weekdays: 1-5 is Monday to Friday, 0 and 7 are Sunday (APScheduler 3 counts from Monday).
    ("0 9 * * 1-5", NEW_YORK, "2026-03-06 00:00", ["2026-03-06 14:00", "2026-03-09 13:00"]),
    ("0 0 * * 0", "UTC", "2026-01-01 00:00", ["2026-01-04 00:00", "2026-01-11 00:00"]),
    ("0 0 * * 7", "UTC", "2026-01-01 00:00", ["2026-01-04 00:00"]),
    (
        "0 0 * * fri-sun",
        "UTC",
        "2026-01-01 00:00",
        ["2026-01-02 00:00", "2026-01-03 00:00", "2026-01-04 00:00"],
    ),
    # Both day fields restricted: either one matches (the 13th, or any Friday).
    ("0 0 13 * 5", "UTC", "2026-01-01 00:00", ["2026-01-02 00:00", "2026-01-09 00:00", "2026-01-13 00:00"]),
]


@pytest.mark.parametrize(("expr", "zone", "start", "expected"), TABLE)
def test_cron_next_fires(expr: str, zone: str, start: str, expected: list[str]) -> None:
    """Each row's next fire times, in UTC, are exactly the expected ones."""
    fires = next_fire_times(Cron(expr, ZoneInfo(zone)), utc(start), len(expected))
    assert [f.strftime("%Y-%m-%d %H:%M") for f in fires] == expected


@pytest.mark.parametrize(
    ("expr", "zone", "day", "count"),
    [
        ("30 1 * * *", NEW_YORK, "2026-11-01", 1),
        ("30 2 * * *", BERLIN, "2026-10-25", 1),
        ("30 2 * * *", BERLIN, "2026-03-29", 1),
        ("0 * * * *", BERLIN, "2026-10-25", 25),
        ("0 * * * *", BERLIN, "2026-03-29", 23),
        ("*/15 * * * *", NEW_YORK, "2026-11-01", 100),
        ("*/15 * * * *", NEW_YORK, "2026-03-08", 92),
    ],
)
def test_fires_per_local_day(expr: str, zone: str, day: str, count: int) -> None:
    """A whole transition day yields the expected number of fires, and the search terminates."""
    tz = ZoneInfo(zone)
    start = datetime.fromisoformat(day).replace(tzinfo=tz).astimezone(UTC) - timedelta(seconds=1)
    end = (datetime.fromisoformat(day) + timedelta(days=1)).replace(tzinfo=tz).astimezone(UTC)
    fires = [f for f in next_fire_times(Cron(expr, tz), start, count + 5) if f < end]
    assert len(fires) == count
    assert len(set(fires)) == len(fires)


def test_apscheduler_gets_dst_wrong_without_our_fix() -> None:
    """APScheduler 3 alone fires 30 2 * * * at 02:30+01:00 in spring and twice in autumn."""
    trigger = CronTrigger.from_crontab("30 2 * * *", timezone=ZoneInfo(BERLIN))
    spring = trigger.get_next_fire_time(None, utc("2026-03-28 12:00"))
    assert spring.astimezone(UTC) == utc("2026-03-29 01:30")  # 03:30 CEST, not 03:00
    first = trigger.get_next_fire_time(None, utc("2026-10-24 12:00"))
    second = trigger.get_next_fire_time(first, first)
    assert second.astimezone(UTC) - first.astimezone(UTC) == timedelta(hours=1)  # twice that night
    assert next_fire_time(Cron("30 2 * * *", ZoneInfo(BERLIN)), utc("2026-03-28 12:00")) == utc(
        "2026-03-29 01:00"
    )


def test_every_fires_on_the_epoch_grid() -> None:
    """`every` fires at multiples of its interval since the epoch, strictly after the given time."""
    assert next_fire_times(Every(300), utc("2026-01-01 00:00"), 2) == [
        utc("2026-01-01 00:05"),
        utc("2026-01-01 00:10"),
    ]
    assert next_fire_time(Every(1), utc("2026-01-01 00:00") + timedelta(microseconds=500)) == datetime(
        2026, 1, 1, 0, 0, 1, tzinfo=UTC
    )
    assert next_fire_time(Every(86400), utc("2026-03-29 00:30")) == utc("2026-03-30 00:00")


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * * *", "has 4 fields"),
        ("61 * * * *", "minute field '61'"),
        ("* 24 * * *", "hour field '24'"),
        ("* * 0 * *", "day-of-month field '0'"),
        ("* * * 13 *", "month field '13'"),
        ("* * * * 8", "day-of-week field '8'"),
        ("* * * * 5-1", "runs backwards"),
        ("* * * * */0", "must be a positive number"),
    ],
)
def test_invalid_cron_names_the_field(expr: str, message: str) -> None:
    """An invalid expression raises ValueError naming the field at fault."""
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        Cron(expr)


def test_jitter_is_stable_and_bounded() -> None:
    """Jitter is the same for one fire on every daemon, and within [0, jitter)."""
    at = utc("2026-05-01 06:00")
    offsets = [jitter_offset_s("sync", at + timedelta(minutes=i), 30) for i in range(200)]
    assert all(0 <= o < 30 for o in offsets)
    assert len(set(offsets)) > 100
    assert jitter_offset_s("sync", at, 30) == jitter_offset_s("sync", at, 30)
    assert jitter_offset_s("sync", at, 0) == 0


def test_iso_spelling() -> None:
    """Scheduled times are spelled in UTC to the second, as in idempotency keys."""
    assert iso(datetime(2026, 3, 29, 3, 0, tzinfo=ZoneInfo(BERLIN))) == "2026-03-29T01:00:00Z"
