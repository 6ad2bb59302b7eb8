"""A user's local clock: quiet hours and digest close times, correct across daylight saving.

Wall-clock times are turned into instants with the scheduler's rule (worker.scheduler.timing):
a time inside the skipped spring hour means the first valid instant after the gap, a time in the
repeated autumn hour means its first occurrence. So a quiet night or a daily digest happens
exactly once per local day whatever the clocks do.

Quiet hours are intervals of real time, [start, end) of one night, not a test of the clock face:
in the repeated autumn hour the clock shows a quiet time twice, but the night ended at the first
pass and does not begin again.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from jobs.notifications.models import DigestMode, QuietHours
from worker.scheduler.timing import wall_instants

_HOUR = timedelta(hours=1)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo of an IANA name (validated by the models before it gets here)."""
    return ZoneInfo(name)


@lru_cache(maxsize=65536)
def at_local(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """The instant (UTC) at which the wall clock of ``tz`` shows ``clock`` on ``day``."""
    (instant,) = wall_instants(datetime.combine(day, clock), tz, wildcard=False)
    return instant


@lru_cache(maxsize=65536)
def _night(day: date, start: time, end: time, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The quiet interval that starts on local ``day`` (ends the next day when it spans midnight)."""
    end_day = day + timedelta(days=1) if end < start else day
    return at_local(day, start, tz), at_local(end_day, end, tz)


def quiet_interval(quiet: QuietHours, tz: ZoneInfo, now: datetime) -> tuple[datetime, datetime] | None:
    """The quiet interval [start, end) containing ``now``, or None when ``now`` is not quiet."""
    today = now.astimezone(tz).date()
    for day in (today - timedelta(days=1), today):
        start, end = _night(day, quiet.start, quiet.end, tz)
        if start <= now < end:
            return start, end
    return None


def quiet_until(quiet: QuietHours | None, tz: ZoneInfo, now: datetime) -> datetime | None:
    """When the quiet hours around ``now`` end (UTC), or None when it is not quiet now."""
    if quiet is None:
        return None
    interval = quiet_interval(quiet, tz, now)
    return None if interval is None else interval[1]


def next_full_hour(tz: ZoneInfo, after: datetime) -> datetime:
    """The first instant after ``after`` at which the local clock shows a full hour (HH:00).

    Stepped in real time, so a whole-hour change of the clocks neither lengthens nor skips an
    hour; a half-hour change (Lord Howe) takes one more step.
    """
    current = after
    for _ in range(4):
        local = current.astimezone(tz)
        into_hour = timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)
        current = current + (_HOUR - into_hour)
        if current.astimezone(tz).minute == 0:
            return current.astimezone(UTC)
    return current.astimezone(UTC)


def next_daily(clock: time, tz: ZoneInfo, after: datetime) -> datetime:
    """The first instant after ``after`` at which the local clock shows ``clock`` (once a day)."""
    today = after.astimezone(tz).date()
    for offset in range(3):
        instant = at_local(today + timedelta(days=offset), clock, tz)
        if instant > after:
            return instant
    raise AssertionError("unreachable: a local time of day recurs within two days")


def digest_closes_at(
    mode: DigestMode, tz: ZoneInfo, opened_at: datetime, *, window_s: float, digest_at: time | None
) -> datetime:
    """When a digest opened at ``opened_at`` (its first item) closes, in UTC."""
    if mode == "window":
        return (opened_at + timedelta(seconds=window_s)).astimezone(UTC)
    if mode == "hourly":
        return next_full_hour(tz, opened_at)
    if mode == "daily":
        if digest_at is None:
            raise ValueError('digest "daily" needs digest_at')
        return next_daily(digest_at, tz, opened_at)
    raise ValueError(f"digest mode {mode!r} has no close time")


def local_label(instant: datetime, tz: ZoneInfo, now: datetime | None = None) -> str:
    """``HH:MM Zone``; with the date when it is a day or more from ``now``."""
    local = instant.astimezone(tz)
    far = now is not None and abs(instant - now) >= timedelta(days=1)
    return f"{local:%Y-%m-%d %H:%M} {tz.key}" if far else f"{local:%H:%M} {tz.key}"
