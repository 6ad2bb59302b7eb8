"""Frequency caps (counted atomically in Redis) and rate limits (delayed, never dropped)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from jobs.notifications.actors import services
from jobs.notifications.preferences import Caps
from tests.test_notification_send import T0, Rig, make_rig, open_rig


@pytest.fixture
def rig(env: dict[str, str]) -> Iterator[Rig]:
    yield from open_rig(env)


def test_eight_threads_racing_on_a_cap_of_three_admit_exactly_three(rig: Rig) -> None:
    """Eight concurrent takes against per_hour=3: exactly three are admitted."""
    start = threading.Barrier(8)
    admitted: list[bool] = []

    def take(n: int) -> None:
        start.wait()
        check = rig.svc.state.caps("u1", "email", Caps(per_hour=3), T0, mode="take", member=f"d{n}")
        admitted.append(check.admitted)

    threads = [threading.Thread(target=take, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(admitted) == [False] * 5 + [True] * 3
    assert rig.svc.state.caps("u1", "email", Caps(per_hour=3), T0, mode="peek").counters.last_hour == 3


def test_room_time_is_the_oldest_delivery_plus_the_window(rig: Rig) -> None:
    """With per_hour=2 reached, the room comes back when the oldest of the two is an hour old."""
    caps = Caps(per_hour=2)
    rig.svc.state.caps("u1", "email", caps, T0, mode="take")
    rig.svc.state.caps("u1", "email", caps, T0 + timedelta(minutes=10), mode="take")
    counters = rig.svc.state.caps("u1", "email", caps, T0 + timedelta(minutes=20), mode="peek").counters
    assert counters.last_hour == 2 and counters.hour_room_at == T0 + timedelta(hours=1)
    later = rig.svc.state.caps("u1", "email", caps, T0 + timedelta(minutes=61), mode="take")
    assert later.admitted


def test_high_over_the_cap_joins_the_digest(rig: Rig) -> None:
    """per_hour=2: two high notifications go now, the third joins the digest (reason cap)."""
    rig.user("u1", caps={"per_hour": 2})
    for n in range(3):
        rig.send(T0 + timedelta(minutes=n), f"n{n}", priority="high")
    assert len(rig.emails()) == 2
    (deferred,) = rig.of("notification.deferred")
    assert deferred["reason"] == "cap" and deferred["digest"] is True and deferred["cap"] == "per_hour"


def test_cap_with_digest_off_holds_until_room_then_sends_one(rig: Rig) -> None:
    """Digest off, per_hour=1: the next two are held until the hour has room, then go as one digest."""
    rig.user("u1", caps={"per_hour": 1}, digest="off")
    rig.send(T0, "n0")
    rig.send(T0 + timedelta(minutes=1), "n1")
    rig.send(T0 + timedelta(minutes=2), "n2")
    assert len(rig.queued("email.send")) == 1
    until = [d["until"] for d in rig.of("notification.deferred")]
    assert until == ["2026-07-14T11:00:00Z", "2026-07-14T11:00:00Z"]
    assert rig.run_due(T0 + timedelta(minutes=59)) == 0
    assert rig.run_due(T0 + timedelta(hours=1)) == 1
    (email,) = rig.emails()
    assert email["template"] == "digest" and len(email["variables"]["items"]) == 2


def test_over_the_rate_limit_a_delivery_waits_and_is_not_dropped(env: dict[str, str]) -> None:
    """With 1 delivery a minute per user, the second urgent one is deferred (rate_limit), then sent."""
    runtime = make_rig(env, TASKMASTER_RATE_USER_PER_MINUTE="1")
    try:
        r = Rig(runtime, services(runtime))
        r.user("u1")
        r.send(T0, "n0", priority="urgent")
        r.send(T0, "n1", priority="urgent")
        assert len(r.queued("email.send")) == 1
        (deferred,) = r.of("notification.deferred")
        assert deferred["reason"] == "rate_limit" and deferred["notification_ids"] == ["n1"]
        r.svc.limiter.backend.reset([r.svc.keys.rate_user("u1"), r.svc.keys.rate_global])
        assert r.run_due(T0 + timedelta(minutes=1)) == 1
        (email,) = r.emails()
        assert email["variables"]["title"] == "title n1"
    finally:
        runtime.close()
