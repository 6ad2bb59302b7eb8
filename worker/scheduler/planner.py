"""Which fires of an entry are due now, and which were missed: a pure function of the clock.

Each entry has a *settled* time: every fire scheduled at or before it has been decided (run,
or counted as missed). At each look the fires scheduled after it whose due time (scheduled
time plus the entry's jitter) has come are decided:

- a fire more than ``misfire_grace`` late is missed (reason ``misfire``);
- a fire that fell due by the time this scheduler started leading fell due while no scheduler
  ran: the entry's ``catchup`` policy decides (``skip`` runs none of them, ``once`` only the
  latest, ``all`` each one); those it leaves out are missed (reason ``catchup``);
- any other fire runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from worker.scheduler.entry import Entry
from worker.scheduler.timing import iter_fire_times, jitter_offset_s

# Counting fires missed long ago is only for the metric: stop counting after this many.
_COUNT_LIMIT = 10_000


@dataclass(frozen=True)
class Fire:
    entry: str
    scheduled: datetime
    due: datetime


@dataclass
class Plan:
    # Every fire scheduled at or before this time is decided.
    settled: datetime
    fire: list[Fire] = field(default_factory=list)
    missed: Counter[str] = field(default_factory=Counter)
    # When the next undecided fire falls due; None if the entry never fires again.
    next_due: datetime | None = None


def due_time(entry: Entry, scheduled: datetime) -> datetime:
    return scheduled + timedelta(seconds=jitter_offset_s(entry.name, scheduled, entry.jitter_s))


def plan_due(entry: Entry, settled: datetime, now: datetime, *, leading_since: datetime) -> Plan:
    """Decide the fires of ``entry`` scheduled after ``settled`` that are due by ``now``."""
    plan = Plan(settled=settled)
    grace = timedelta(seconds=entry.misfire_grace_s)
    # Fires scheduled before this are certainly past their grace: skip over them quickly.
    horizon = (now - grace - timedelta(seconds=entry.jitter_s)).replace(microsecond=0)
    cursor = settled
    if cursor < horizon:
        for scheduled in iter_fire_times(entry.trigger, cursor):
            if scheduled > horizon or plan.missed["misfire"] >= _COUNT_LIMIT:
                break
            plan.missed["misfire"] += 1
        cursor = plan.settled = horizon
    caught_up: list[Fire] = []
    for scheduled in iter_fire_times(entry.trigger, cursor):
        due = due_time(entry, scheduled)
        if due > now:
            plan.next_due = due
            break
        plan.settled = scheduled
        if now - due > grace:
            plan.missed["misfire"] += 1
        elif due <= leading_since:
            caught_up.append(Fire(entry.name, scheduled, due))
        else:
            plan.fire.append(Fire(entry.name, scheduled, due))
    keep = {"skip": 0, "once": 1, "all": len(caught_up)}[entry.catchup]
    kept = caught_up[len(caught_up) - keep :] if keep else []
    plan.missed["catchup"] += len(caught_up) - len(kept)
    plan.fire[:0] = kept
    plan.missed = +plan.missed  # drop zero counts
    return plan
