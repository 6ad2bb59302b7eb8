"""Next fire times: pure functions of a trigger and an instant, no clock and no Redis.

``every`` counts elapsed time on a grid anchored at the Unix epoch (UTC), whatever the time
zone: ``every: 5m`` fires at :00, :05, ... and ``every: 1d`` at 00:00 UTC. Every daemon computes
the same scheduled times, which is what makes the idempotency key ``fire:NAME:TIME`` agree
between two leaders. Wall-clock times belong to ``cron``.

``cron`` is standard crontab (minute hour day-of-month month day-of-week; weekday 0 or 7 is
Sunday; when both day fields are restricted either may match), evaluated in the entry's time
zone. Daylight-saving changes follow the rule of Vixie cron and cronie, keyed on the hour field:

- An entry whose hour field starts with ``*`` (``*/15 * * * *``, ``0 * * * *``, ``0 */2 * * *``)
  runs by the hour in real time. In the repeated autumn hour it fires at each real occurrence
  (``0 * * * *`` fires at 02:00 CEST and again one hour later at 02:00 CET); its times inside the
  skipped spring hour do not exist and are not fired (no real time passed for them).
- Any other entry names wall-clock hours (``30 2 * * *``, ``*/20 1 * * *``) and fires once per
  matching wall-clock time: in the repeated hour only at its first occurrence, and a time inside
  the skipped hour once at the first valid instant after the gap (``30 2 * * *`` Europe/Berlin
  on 2026-03-29 fires at 03:00 CEST = 01:00 UTC); several such times in one gap fire once.
  (Vixie cron also counts a ``*`` minute as real time; we do not, so that ``*/20 2 * * *``
  still runs once on the spring day and only three times, not six, on the autumn day.)

APScheduler 3.x does the field matching, but on naive wall-clock times evaluated in UTC, which
has no daylight saving: its own time zone arithmetic fires ``30 2 * * *`` at the non-existent
02:30+01:00 (= 03:30 CEST) in spring and twice in autumn, and its ``from_crontab`` numbers
weekdays from Monday. We map wall-clock times to instants ourselves and translate weekdays.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# No time zone moves its clocks by more than this; it bounds how far back a search must start.
_MAX_SHIFT = timedelta(hours=3)
# A search steps through the matching wall-clock times of at most a few hours; this only guards
# against a bug turning into an endless loop.
_MAX_STEPS = 10_000


def iso(instant: datetime) -> str:
    """The spelling of a scheduled time in Redis and idempotency keys: UTC, whole seconds."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class Every:
    """Fire every ``interval_s`` seconds (a whole number, at least 1) on the epoch grid."""

    interval_s: int
    _trigger: IntervalTrigger = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        trigger = IntervalTrigger(seconds=self.interval_s, start_date=EPOCH, timezone=UTC)
        object.__setattr__(self, "_trigger", trigger)

    def next_after(self, after: datetime) -> datetime | None:
        nxt: datetime = self._trigger.get_next_fire_time(None, after)
        # APScheduler returns a fire at `after` itself; we want strictly later ones.
        if nxt <= after:
            nxt += timedelta(seconds=self.interval_s)
        return nxt.astimezone(UTC)

    def describe(self) -> str:
        from worker.durations import format_duration

        return f"every {format_duration(self.interval_s)}"


@dataclass(frozen=True)
class Cron:
    """A five-field crontab expression in an IANA time zone. Raises ValueError when invalid."""

    expr: str
    zone: ZoneInfo = field(default=ZoneInfo("UTC"))
    _triggers: tuple[CronTrigger, ...] = field(init=False, repr=False, compare=False)
    _wildcard: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_triggers", _wall_triggers(self.expr))
        object.__setattr__(self, "_wildcard", self.expr.split()[1].startswith("*"))

    def describe(self) -> str:
        return f"cron '{self.expr}'"

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after`` (an aware datetime), in UTC."""
        zone = self.zone
        wall_after = after.astimezone(zone).replace(tzinfo=None)
        # Only near a transition can an earlier wall-clock time still lie ahead in real time
        # (the first pass of a repeated hour): only then start the search before `after`.
        offsets = {(after + d).astimezone(zone).utcoffset() for d in (-_MAX_SHIFT, timedelta(0), _MAX_SHIFT)}
        cursor = wall_after - _MAX_SHIFT if len(offsets) > 1 else wall_after
        best: datetime | None = None
        for _ in range(_MAX_STEPS):
            wall = self._next_wall(cursor)
            if wall is None:
                return best
            instants = wall_instants(wall, zone, wildcard=self._wildcard)
            later = [i for i in instants if i > after]
            if later and (best is None or min(later) < best):
                best = min(later)
            # The earliest instant of each wall time grows with the wall time, so once it is
            # past `after` no later wall time can give an earlier fire.
            if instants and min(instants) > after:
                return best
            cursor = wall + timedelta(minutes=1)
        return best

    def _next_wall(self, wall: datetime) -> datetime | None:
        """The first matching naive wall-clock time at or after ``wall``."""
        found: list[datetime] = []
        for trigger in self._triggers:
            nxt = trigger.get_next_fire_time(None, wall.replace(tzinfo=UTC))
            if nxt is not None:
                found.append(nxt.replace(tzinfo=None))
        return min(found) if found else None


Trigger = Every | Cron


def next_fire_time(trigger: Trigger, after: datetime) -> datetime | None:
    """The first scheduled time strictly after ``after``; None if the trigger never fires again."""
    return trigger.next_after(after)


def next_fire_times(trigger: Trigger, after: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    for fire in iter_fire_times(trigger, after):
        out.append(fire)
        if len(out) >= count:
            break
    return out


def iter_fire_times(trigger: Trigger, after: datetime) -> Iterator[datetime]:
    """Every scheduled time after ``after``, in order (endless for most triggers)."""
    current = after
    while True:
        nxt = trigger.next_after(current)
        if nxt is None:
            return
        yield nxt
        current = nxt


def jitter_offset_s(name: str, scheduled: datetime, jitter_s: float) -> float:
    """A delay in [0, jitter_s) that every daemon computes alike for one fire of one entry."""
    if jitter_s <= 0:
        return 0.0
    digest = hashlib.sha256(f"{name}|{iso(scheduled)}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return round(fraction * jitter_s, 3)


def wall_instants(wall: datetime, zone: ZoneInfo, *, wildcard: bool) -> list[datetime]:
    """The real instants (UTC) at which a naive wall-clock time fires, under the rules above."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    exists = first.astimezone(zone).replace(tzinfo=None) == wall
    if exists:  # the repeated hour: fold=0 is the first pass
        return [first, second] if wildcard else [first]
    if wildcard:  # inside the gap
        return []
    return [_transition(min(first, second), max(first, second), zone)]


def _transition(lo: datetime, hi: datetime, zone: ZoneInfo) -> datetime:
    """The instant in (lo, hi] where the zone's offset changes (a gap), to the second."""
    before = lo.astimezone(zone).utcoffset()
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == before:
            lo_s = mid
        else:
            hi_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


def _wall_triggers(expr: str) -> tuple[CronTrigger, ...]:
    """APScheduler triggers matching the expression on naive wall-clock times (as UTC)."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {expr!r} has {len(fields)} fields; use 5: minute hour day-of-month month day-of-week"
        )
    minute, hour, day, month, dow = fields
    names = ("minute", "hour", "day-of-month", "month")
    for name, value, kw in zip(names, fields[:4], ("minute", "hour", "day", "month"), strict=True):
        try:
            CronTrigger(**{kw: value}, timezone=UTC)
        except ValueError as exc:
            reason = re.sub(r"^Error validating expression '[^']*': ", "", str(exc))
            raise ValueError(f"cron {expr!r}, {name} field {value!r}: {reason}") from None
    try:
        days = _weekdays(dow)
    except ValueError as exc:
        raise ValueError(f"cron {expr!r}, day-of-week field {dow!r}: {exc}") from None

    def make(day_field: str, dow_field: str) -> CronTrigger:
        return CronTrigger(
            minute=minute, hour=hour, day=day_field, month=month, day_of_week=dow_field, timezone=UTC
        )

    dow_field = ",".join(_DAY_NAMES[d] for d in days)
    if day.startswith("*") or dow.startswith("*"):
        return (make(day, "*" if dow.startswith("*") and len(days) == 7 else dow_field),)
    # crontab(5): with both day fields restricted, a day matching either one fires.
    return (make(day, "*"), make("*", dow_field))


def _weekdays(text: str) -> list[int]:
    """Crontab day-of-week (0-7, 0 and 7 Sunday, or sun-sat; lists, ranges, steps) as 0-6."""
    out: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            lo, hi = 0, 6
        elif "-" in base:
            a, _, b = base.partition("-")
            lo, hi = _weekday(a), _weekday(b)
            if lo > hi and hi != 0:
                raise ValueError(f"range {base!r} runs backwards")
            hi = 7 if hi == 0 and lo > 0 else hi
        else:
            lo = hi = _weekday(base)
            if step_text:
                hi = 7
        out.update(d % 7 for d in range(lo, hi + 1, step))
    return sorted(out)


def _weekday(text: str) -> int:
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    if text.lower() in _DAY_NAMES:
        return _DAY_NAMES.index(text.lower())
    raise ValueError(f"{text!r} is not a weekday: use 0-7 (0 and 7 are Sunday) or sun, mon, ..., sat")
