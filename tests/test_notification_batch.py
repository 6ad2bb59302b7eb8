"""send_many: several notifications decided with shared round trips, as if one after the other."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from jobs.notifications.actors import services
from jobs.notifications.models import NotificationSend
from jobs.notifications.send import Incoming, send_many
from jobs.notifications.state import Ask
from tests.test_notification_send import T0, Rig, make_rig, open_rig


@pytest.fixture
def rig(env: dict[str, str]) -> Iterator[Rig]:
    yield from open_rig(env)


def incoming(rig: Rig, id: str, user: str = "u1", **data: Any) -> Incoming:
    body = {"user_id": user, "category": "task.due", "title": f"title {id}", "channels": ["email"], **data}
    submitted_ms = int(T0.timestamp() * 1000)
    return Incoming(NotificationSend.model_validate(body), id, f"id:{id}", submitted_ms, rig.emit)


def evalsha_calls(rig: Rig) -> int:
    stats: Any = rig.runtime.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_batch_decides_as_one_notification_after_the_other(rig: Rig) -> None:
    """Digest joins in order (a later dedupe_key replaces the earlier), a quiet-hours hold, an
    unknown user handed back to be tried again, every decision logged and reported once."""
    rig.user("u1")
    rig.user("u2", quiet_hours={"start": "09:00", "end": "12:00"})
    batch = [
        incoming(rig, "n1", dedupe_key="task-42", title="Report due (1)"),
        incoming(rig, "n2", user="u2"),
        incoming(rig, "n3", user="nobody"),
        incoming(rig, "n4", dedupe_key="task-42", title="Report due (2)"),
        incoming(rig, "n5", priority="urgent"),
    ]
    waiting = send_many(rig.svc, batch, now=T0)
    assert [w.notification_id for w in waiting] == ["n3"]
    deferred = {d["notification_ids"][0]: d for d in rig.of("notification.deferred")}
    assert deferred["n1"]["reason"] == deferred["n4"]["reason"] == "digest"
    assert deferred["n1"]["until"] == deferred["n4"]["until"] == "2026-07-14T10:05:00Z"
    assert deferred["n2"]["reason"] == "quiet_hours" and deferred["n2"]["until"] == "2026-07-14T12:00:00Z"
    assert [d["notification_ids"] for d in rig.of("notification.delivered")] == [["n5"]]
    assert sorted(row.notification_id for row in rig.log()) == ["n1", "n2", "n4", "n5"]

    assert rig.run_due(T0 + timedelta(minutes=5)) == 1
    digest = next(e for e in rig.emails() if e.get("variables", {}).get("title") != "title n5")
    assert digest["variables"]["title"] == "Report due (2)"  # one item left: it goes as itself

    before = len(rig.events)
    assert send_many(rig.svc, batch[:2] + batch[3:], now=T0) == []
    assert len(rig.events) == before  # every channel of those jobs is done: nothing twice


def test_a_job_twice_in_one_batch_is_decided_once(rig: Rig) -> None:
    rig.user("u1")
    send_many(rig.svc, [incoming(rig, "n1"), incoming(rig, "n1")], now=T0)
    assert len(rig.of("notification.deferred")) == 1
    assert len(rig.log()) == 1


def test_a_batch_shares_its_scripts(rig: Rig) -> None:
    """Twenty notifications joining open digests: one snapshot, one add and one report script."""
    for n in range(4):
        rig.user(f"u{n}")
    send_many(rig.svc, [incoming(rig, f"open{n}", user=f"u{n}") for n in range(4)], now=T0)
    before = evalsha_calls(rig)
    batch = [incoming(rig, f"n{n}", user=f"u{n % 4}") for n in range(20)]
    send_many(rig.svc, batch, now=T0 + timedelta(seconds=1))
    assert evalsha_calls(rig) - before == 3
    assert len(rig.of("notification.deferred")) == 24


def test_deliveries_over_the_global_rate_are_booked_a_slot_each_and_go_then(env: dict[str, str]) -> None:
    """One a second: of five high notifications one goes now and four are held, each until a
    slot of its own (1, 2, 3, 4 s on); released, they go without asking the limits again, so
    each is reported deferred once, not again and again under the overload."""
    runtime = make_rig(env, TASKMASTER_RATE_GLOBAL_PER_SECOND="1", TASKMASTER_RATE_GLOBAL_BURST="1")
    try:
        rig = Rig(runtime, services(runtime))
        for n in range(5):
            rig.user(f"u{n}")
        send_many(rig.svc, [incoming(rig, f"n{n}", user=f"u{n}", priority="high") for n in range(5)], now=T0)
        assert len(rig.of("notification.delivered")) == 1
        held = rig.of("notification.deferred")
        assert [d["reason"] for d in held] == ["rate_limit"] * 4
        waits = sorted(datetime.fromisoformat(d["until"]).timestamp() - T0.timestamp() for d in held)
        assert [round(w) for w in waits] == [1, 2, 3, 4]
        assert rig.run_due(T0 + timedelta(seconds=10)) == 4
        assert len(rig.of("notification.delivered")) == 5
        assert len(rig.of("notification.deferred")) == 4
    finally:
        runtime.close()


def test_the_scripts_build_the_keys_python_names(rig: Rig) -> None:
    """The batch scripts build their keys from NotifKeys.root and the ids they are sent: the very
    keys NotifKeys names, whatever an envelope id holds (quotes, a line break, non-ASCII)."""
    rig.user("u.1:x")
    odd = 'n "1"\\\nüñ😀'
    sent = incoming(rig, odd, user="u.1:x", title="Report due")
    send_many(rig.svc, [sent], now=T0)
    keys, client = rig.svc.state.keys, rig.runtime.redis
    assert client.exists(keys.done(sent.idempotency_key, "email"))
    assert client.exists(keys.batch("u.1:x", "email"))
    assert client.hget(keys.where(odd), "email") == f"{keys.batch('u.1:x', 'email')}\nid:{odd}".encode()
    [snapshot] = rig.svc.state.snapshot([Ask("u.1:x", ["email"], sent.idempotency_key)])
    assert snapshot.done == {"email"} and snapshot.digests["email"].size == 1
    assert snapshot.token == client.get(keys.profile("u.1:x")).decode()
    [event] = rig.of("notification.deferred")
    assert event["notification_ids"] == [odd]
