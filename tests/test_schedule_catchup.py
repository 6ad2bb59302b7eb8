"""Deciding due and missed fires (worker/scheduler/planner.py): catch-up policies and grace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.scheduler.config import Entry
from worker.scheduler.planner import due_time, plan_due
from worker.scheduler.timing import Cron, Every

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def hourly(**overrides: Any) -> Entry:
    values: dict[str, Any] = {"name": "hourly", "job": "test.job", "trigger": Every(3600), "timezone": "UTC"}
    values.update(overrides)
    return Entry(**values)


@pytest.mark.parametrize(
    ("catchup", "fired", "missed"),
    [
        ("skip", [], 3),
        ("once", [T0], 2),
        ("all", [T0 - timedelta(hours=2), T0 - timedelta(hours=1), T0], 0),
    ],
)
def test_catchup_policies(catchup: str, fired: list[datetime], missed: int) -> None:
    """Three fires fell due while no scheduler ran: skip runs none, once the latest, all each."""
    entry = hourly(catchup=catchup, misfire_grace_s=4 * 3600)
    settled = T0 - timedelta(hours=3)
    now = T0 + timedelta(minutes=10)
    plan = plan_due(entry, settled, now, leading_since=now)
    assert [f.scheduled for f in plan.fire] == fired
    assert plan.missed.get("catchup", 0) == missed
    assert plan.settled == T0
    assert plan.next_due == T0 + timedelta(hours=1)


def test_catchup_only_within_misfire_grace() -> None:
    """Fires later than misfire_grace are missed (misfire), even with catchup all."""
    entry = hourly(catchup="all", misfire_grace_s=90 * 60)
    now = T0 + timedelta(minutes=10)
    plan = plan_due(entry, T0 - timedelta(hours=5), now, leading_since=now)
    assert [f.scheduled for f in plan.fire] == [T0 - timedelta(hours=1), T0]
    assert plan.missed["misfire"] == 3


def test_default_is_once() -> None:
    """The default catchup policy runs one missed fire."""
    entry = hourly()
    assert entry.catchup == "once"
    now = T0 + timedelta(seconds=30)
    plan = plan_due(entry, T0 - timedelta(hours=2), now, leading_since=now)
    assert [f.scheduled for f in plan.fire] == [T0]


def test_fires_while_leading_all_run() -> None:
    """Fires due after this scheduler began leading are not catch-up: each runs, whatever the policy."""
    entry = hourly(catchup="skip", trigger=Every(1))
    plan = plan_due(entry, T0, T0 + timedelta(seconds=3), leading_since=T0)
    assert [f.scheduled for f in plan.fire] == [T0 + timedelta(seconds=i) for i in (1, 2, 3)]
    assert not plan.missed


def test_nothing_due_yet() -> None:
    """Before the next fire nothing is decided, and the plan says when to look again."""
    entry = hourly()
    plan = plan_due(entry, T0, T0 + timedelta(minutes=59), leading_since=T0)
    assert plan.fire == [] and not plan.missed
    assert plan.settled == T0 and plan.next_due == T0 + timedelta(hours=1)


def test_jitter_delays_the_due_time_not_the_key() -> None:
    """A jittered fire falls due after its scheduled time and keeps the scheduled time."""
    entry = hourly(jitter_s=600)
    due = due_time(entry, T0)
    assert T0 <= due < T0 + timedelta(minutes=10)
    assert (
        plan_due(entry, T0 - timedelta(hours=1), due - timedelta(microseconds=1), leading_since=T0).fire == []
    )
    assert [f.scheduled for f in plan_due(entry, T0 - timedelta(hours=1), due, leading_since=T0).fire] == [T0]


def test_long_outage_is_skipped_quickly() -> None:
    """A year without a scheduler: old fires are counted as missed (up to a cap), not enumerated forever."""
    entry = hourly(trigger=Every(1), misfire_grace_s=60)
    now = T0 + timedelta(days=365)
    plan = plan_due(entry, T0, now, leading_since=now)
    assert len(plan.fire) == 1 and plan.fire[0].scheduled == now
    assert plan.missed["misfire"] >= 10_000


def test_cron_catchup_in_a_time_zone() -> None:
    """Catch-up enumerates the DST-correct cron fires (Berlin's spring gap: 03:00 CEST)."""
    from zoneinfo import ZoneInfo

    entry = hourly(
        trigger=Cron("30 2 * * *", ZoneInfo("Europe/Berlin")), catchup="all", misfire_grace_s=86400 * 3
    )
    now = datetime(2026, 3, 30, 6, 0, tzinfo=UTC)
    plan = plan_due(entry, datetime(2026, 3, 28, 0, 0, tzinfo=UTC), now, leading_since=now)
    assert [f.scheduled for f in plan.fire] == [
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),
    ]
