"""notification.send: immediate delivery, holds, digests, unknown users, SQL records.

Time is driven by a ``now`` passed into the functions; due items are released with
``DueStore.release_due(now_ms)`` and the flush jobs they enqueue are run here at that ``now``.
The rig below is shared by the other tests/test_notification_*.py files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
import redis
from dramatiq import Worker
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.notifications.actors import services
from jobs.notifications.flush import FlushJob, Services, flush
from jobs.notifications.models import NotificationSend
from jobs.notifications.send import send
from tests.helpers import events, wait_for
from worker.broker import build_broker
from worker.db.messaging import NotificationLog, WebhookEndpoint
from worker.db.users import Preferences as PreferencesRow
from worker.db.users import User
from worker.due import DueStore
from worker.errors import NotReady
from worker.intake import Intake
from worker.registry import load_job_modules
from worker.runtime import Runtime
from worker.settings import load_settings

MODULES = "jobs.email,jobs.webhooks,jobs.push,jobs.notifications.actors"
T0 = datetime(2026, 7, 14, 10, 0, tzinfo=UTC)


@dataclass
class Rig:
    """The sending side on a real Redis and SQL database, with a controllable clock."""

    runtime: Runtime
    svc: Services
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        self.events.append((event_type, data))

    def user(
        self, user_id: str, *, tz: str = "UTC", email: str | None = "ada@example.com", **prefs: Any
    ) -> None:
        with Session(self.runtime.db) as session, session.begin():
            session.add(User(id=user_id, email=email, name="Ada", timezone=tz))
            session.flush()
            session.add(
                PreferencesRow(
                    user_id=user_id,
                    channels=prefs.get("channels", {"email": True, "push": False, "webhook": False}),
                    categories=prefs.get("categories", {}),
                    quiet_hours=prefs.get("quiet_hours", {}),
                    caps=prefs.get("caps", {}),
                    dnd_until=prefs.get("dnd_until"),
                    digest_mode=prefs.get("digest", "window"),
                    digest_at=prefs.get("digest_at"),
                )
            )

    def send(self, now: datetime, id: str, submitted: datetime | None = None, **data: Any) -> None:
        body = {"user_id": "u1", "category": "task.due", "title": f"title {id}", **data}
        send(
            self.svc,
            self.emit,
            NotificationSend.model_validate(body),
            notification_id=id,
            idempotency_key=f"id:{id}",
            submitted_ms=int((submitted or now).timestamp() * 1000),
            now=now,
        )

    def queued(self, actor: str, *, take: bool = True) -> list[dict[str, Any]]:
        """Messages of ``actor`` waiting in any queue (removed from it unless ``take`` is False)."""
        found = []
        client, keys = self.runtime.redis, self.runtime.keys
        for queue in ("urgent", "default", "bulk"):
            for message_id, raw in client.hgetall(keys.queue_messages(queue)).items():
                message = json.loads(raw)
                if message["actor_name"].split("@")[0] != actor:
                    continue
                message["queue_name"] = queue
                found.append(message)
                if take:
                    client.lrem(keys.queue(queue), 0, message_id)
                    client.hdel(keys.queue_messages(queue), message_id)
        return found

    def run_due(self, now: datetime) -> int:
        """Release what is due by ``now`` and run the flushes released; return how many ran."""
        self.svc.due.release_due(int(now.timestamp() * 1000))
        ran = 0
        for message in self.queued("notifications.flush"):
            job = FlushJob.model_validate(message["kwargs"]["data"])
            flush(self.svc, self.emit, job, owner=message["message_id"], now=now)
            ran += 1
        return ran

    def emails(self) -> list[dict[str, Any]]:
        return [m["kwargs"]["data"] for m in self.queued("email.send", take=False)]

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [data for name, data in self.events if name == event_type]

    def log(self, channel: str = "email") -> list[NotificationLog]:
        query = select(NotificationLog).where(NotificationLog.channel == channel).order_by(NotificationLog.id)
        with Session(self.runtime.db) as session:
            return list(session.scalars(query))


def make_rig(env: dict[str, str], **extra: str) -> Runtime:
    settings = load_settings(
        {**env, "TASKMASTER_JOB_MODULES": MODULES, "TASKMASTER_RATE_USER_PER_MINUTE": "1000", **extra}
    )
    return Runtime(settings, load_job_modules(settings.job_modules))


def open_rig(env: dict[str, str]) -> Iterator[Rig]:
    """The body of each test file's ``rig`` fixture."""
    runtime = make_rig(env)
    yield Rig(runtime, services(runtime))
    runtime.close()


@pytest.fixture
def rig(env: dict[str, str]) -> Iterator[Rig]:
    yield from open_rig(env)


class Daemon:
    """Intake, Dramatiq workers and the due releaser in this process."""

    def __init__(self, env: dict[str, str], **extra: str) -> None:
        settings = load_settings(
            {**env, "TASKMASTER_JOB_MODULES": MODULES, "TASKMASTER_DIGEST_WINDOW": "1", **extra}
        )
        self.runtime = Runtime(settings, load_job_modules(settings.job_modules))
        self.intake = Intake(self.runtime, "test")
        self.intake.ensure_group()
        self.broker = build_broker(self.runtime)
        self.worker = Worker(self.broker, worker_threads=2, worker_timeout=50)
        self.due = DueStore(self.runtime.redis, self.runtime.keys)

    def submit(self, client: redis.Redis, job: dict[str, object]) -> None:
        import json

        client.xadd("taskmaster:intake", {"job": json.dumps(job)})
        self.intake.poll_once(block_ms=10)

    def close(self) -> None:
        self.worker.stop(timeout=5000)
        self.broker.close()
        self.runtime.close()


def open_daemon(env: dict[str, str], **extra: str) -> Iterator[Daemon]:
    d = Daemon(env, **extra)
    yield d
    d.close()


def test_urgent_is_handed_to_email_now_and_recorded(rig: Rig) -> None:
    """An urgent notification during quiet hours goes out at once, as itself, and is logged."""
    rig.user("u1", quiet_hours={"start": "08:00", "end": "12:00"})
    rig.send(T0, "n1", priority="urgent", body="Now!")
    (email,) = rig.emails()
    assert email["to"] == ["ada@example.com"] or email["to"] == "ada@example.com"
    assert email["template"] == "system" and email["variables"]["title"] == "title n1"
    (delivered,) = rig.of("notification.delivered")
    assert delivered["channel"] == "email" and delivered["notification_ids"] == ["n1"]
    assert delivered["digest"] is False and delivered["count"] == 1
    (row,) = rig.log()
    assert (row.user_id, row.channel, row.decision, row.reason) == ("u1", "email", "delivered", "urgent")


def test_an_urgent_hand_over_goes_on_the_urgent_queue(rig: Rig) -> None:
    """The email of an urgent notification is queued as urgent work; a high one as ordinary work."""
    rig.user("u1")
    rig.send(T0, "n1", priority="urgent")
    rig.send(T0, "n2", priority="high")
    queues = {m["kwargs"]["data"]["variables"]["title"]: m["queue_name"] for m in rig.queued("email.send")}
    assert queues == {"title n1": "urgent", "title n2": "default"}


def test_an_urgent_delivery_held_by_the_rate_limit_flushes_on_the_urgent_queue(env: dict[str, str]) -> None:
    """Over the per-user rate, an urgent notification waits for the limiter, and then its flush
    and its email are urgent work: it must not queue behind the ordinary backlog."""
    runtime = make_rig(env, TASKMASTER_RATE_USER_PER_MINUTE="1")
    rig = Rig(runtime, services(runtime))
    try:
        rig.user("u1")
        rig.send(T0, "n1", priority="urgent")
        rig.send(T0, "n2", priority="urgent")
        (held,) = [e for e in rig.of("notification.deferred") if e["reason"] == "rate_limit"]
        assert held["notification_ids"] == ["n2"]
        rig.queued("email.send")  # n1's email, handed over at once
        rig.svc.due.release_due(int(T0.timestamp() * 1000) + 61_000)
        (flush_message,) = rig.queued("notifications.flush", take=False)
        assert flush_message["queue_name"] == "urgent"
        # The limiter counts on Redis's clock, not the test's: give it room by forgetting n1.
        rig.svc.limiter.reset([rig.svc.keys.rate_user("u1")])
        assert rig.run_due(T0 + timedelta(seconds=61)) == 1
        (email,) = rig.queued("email.send")
        assert email["queue_name"] == "urgent" and email["kwargs"]["data"]["variables"]["title"] == "title n2"
    finally:
        runtime.close()


def test_an_urgent_delivery_a_moment_over_the_global_rate_waits_in_its_thread(env: dict[str, str]) -> None:
    """When the limiter frees room within a moment, an urgent delivery waits for it and goes out
    at once, instead of a round through the due-time store; a high one is deferred."""
    runtime = make_rig(env, TASKMASTER_RATE_GLOBAL_PER_SECOND="10", TASKMASTER_RATE_GLOBAL_BURST="1")
    rig = Rig(runtime, services(runtime))
    try:
        rig.user("u1")
        rig.send(T0, "n1", priority="urgent")
        rig.send(T0, "n2", priority="urgent")  # 0.1 s over the rate: waits for it
        rig.send(T0, "n3", priority="high")  # over the rate too: held for the limiter
        delivered = [e["notification_ids"] for e in rig.of("notification.delivered")]
        assert delivered == [["n1"], ["n2"]]
        (held,) = rig.of("notification.deferred")
        assert (held["notification_ids"], held["reason"]) == (["n3"], "rate_limit")
    finally:
        runtime.close()


def test_the_webhook_channel_holds_nothing_for_a_user_no_endpoint_takes(rig: Rig) -> None:
    """Without an enabled endpoint for the user (or for every user), the webhook channel is
    suppressed as having no address, as push is without a device; with one, it digests."""
    on = {"email": False, "push": False, "webhook": True}
    rig.user("u1", channels=on)
    rig.user("u2", channels=on)
    with Session(rig.runtime.db) as session, session.begin():
        session.add(WebhookEndpoint(id="e2", url="https://hooks.example/u2", secret=b"x", user_id="u2"))
    rig.send(T0, "n1", user_id="u1")
    rig.send(T0, "n2", user_id="u2")
    webhook = [e for e in rig.events if e[1]["channel"] == "webhook"]
    assert [(kind, e["notification_ids"], e["reason"]) for kind, e in webhook] == [
        ("notification.suppressed", ["n1"], "no_address"),
        ("notification.deferred", ["n2"], "digest"),
    ]


def test_send_is_idempotent_per_envelope(rig: Rig) -> None:
    """The same envelope id decided twice (a retried job) hands over one email."""
    rig.user("u1")
    rig.send(T0, "n1", priority="high")
    rig.send(T0, "n1", priority="high")
    assert len(rig.emails()) == 1


def test_suppressed_by_category_choice(rig: Rig) -> None:
    """A category turned off on a channel is suppressed with reason preference, nothing sent."""
    rig.user("u1", categories={"task.due": {"email": False}})
    rig.send(T0, "n1", priority="urgent")
    assert rig.emails() == []
    (event,) = [e for e in rig.of("notification.suppressed") if e["channel"] == "email"]
    assert event["channel"] == "email" and event["reason"] == "preference" and event["by"] == "category"


def test_quiet_hours_hold_then_one_message_at_their_end(rig: Rig) -> None:
    """Given quiet hours 22:00-07:00 Berlin, two notifications at 23:00 are held and go out
    as one digest at 07:00 local, not before."""
    rig.user("u1", tz="Europe/Berlin", quiet_hours={"start": "22:00", "end": "07:00"})
    night = datetime(2026, 7, 14, 21, 0, tzinfo=UTC)  # 23:00 in Berlin (CEST)
    rig.send(night, "n1", priority="high")
    rig.send(night + timedelta(minutes=5), "n2")
    deferred = rig.of("notification.deferred")
    assert [d["reason"] for d in deferred] == ["quiet_hours", "quiet_hours"]
    assert deferred[0]["until"] == "2026-07-15T05:00:00Z"
    assert rig.run_due(datetime(2026, 7, 15, 4, 59, tzinfo=UTC)) == 0
    assert rig.emails() == []
    assert rig.run_due(datetime(2026, 7, 15, 5, 0, tzinfo=UTC)) == 1
    (email,) = rig.emails()
    assert email["template"] == "digest"
    assert {i["title"] for i in email["variables"]["items"]} == {"title n1", "title n2"}
    assert email["variables"]["timezone"] == "Europe/Berlin"


def test_window_digest_collects_and_dedupes(rig: Rig) -> None:
    """Normal notifications within the window go out as one digest; a repeated dedupe_key is
    listed once (the latest)."""
    rig.user("u1")
    rig.send(T0, "n1", dedupe_key="task-42", title="Report due (1)")
    rig.send(T0 + timedelta(minutes=1), "n2", category="comment")
    rig.send(T0 + timedelta(minutes=2), "n3", dedupe_key="task-42", title="Report due (2)")
    assert rig.of("notification.deferred")[0]["until"] == "2026-07-14T10:05:00Z"
    assert rig.emails() == []
    assert rig.run_due(T0 + timedelta(minutes=5)) == 1
    (email,) = rig.emails()
    titles = [i["title"] for i in email["variables"]["items"]]
    assert sorted(titles) == ["Report due (2)", "title n2"]
    (delivered,) = rig.of("notification.delivered")
    assert delivered["digest"] is True and delivered["count"] == 2


def test_one_item_digest_goes_out_as_itself(rig: Rig) -> None:
    """A digest that closes with one item sends that notification, not a digest."""
    rig.user("u1")
    rig.send(T0, "n1")
    rig.run_due(T0 + timedelta(minutes=5))
    (email,) = rig.emails()
    assert email["template"] == "system" and email["variables"]["title"] == "title n1"


def test_digest_closes_early_at_max_items(env: dict[str, str]) -> None:
    """With TASKMASTER_DIGEST_MAX_ITEMS=3 the third item closes the digest now."""
    runtime = make_rig(env, TASKMASTER_DIGEST_MAX_ITEMS="3")
    try:
        rig = Rig(runtime, services(runtime))
        rig.user("u1")
        for n in range(3):
            rig.send(T0, f"n{n}")
        assert rig.run_due(T0) == 1
        (email,) = rig.emails()
        assert len(email["variables"]["items"]) == 3
        rig.send(T0, "n3")  # starts a new batch
        assert rig.run_due(T0) == 0
    finally:
        runtime.close()


def test_unknown_user_is_not_ready_then_fails(rig: Rig) -> None:
    """For a user not known yet the job is retried (NotReady); past not_ready_max_age it ends
    with notification.failed naming the channel."""
    with pytest.raises(NotReady):
        rig.send(T0, "n1", channels=["email"])
    old = T0 - timedelta(seconds=rig.runtime.settings.not_ready_max_age + 1)
    rig.send(T0, "n1", channels=["email"], submitted=old)
    (failed,) = rig.of("notification.failed")
    assert failed["channel"] == "email" and failed["reason"] == "unknown_user"


def test_dnd_deferred_event_names_until_and_reason(rig: Rig) -> None:
    """Do-not-disturb holds until dnd_until; the deferral is logged in SQL with its end."""
    rig.user("u1", dnd_until=datetime(2026, 7, 14, 12, 0, tzinfo=UTC))
    rig.send(T0, "n1", priority="high")
    (deferred,) = rig.of("notification.deferred")
    assert deferred["reason"] == "dnd" and deferred["until"] == "2026-07-14T12:00:00Z"
    (row,) = rig.log()
    assert row.decision == "deferred" and row.decided_until == datetime(2026, 7, 14, 12, 0, tzinfo=UTC)
    rig.run_due(datetime(2026, 7, 14, 12, 0, tzinfo=UTC))
    assert len(rig.emails()) == 1


def test_daily_digest_closes_at_digest_at(rig: Rig) -> None:
    """A daily digest opened at 10:00 closes at digest_at 18:00 in the user's zone."""
    rig.user("u1", tz="America/New_York", digest="daily", digest_at=time(18, 0))
    rig.send(T0, "n1")
    assert rig.of("notification.deferred")[0]["until"] == "2026-07-14T22:00:00Z"


def test_decisions_are_recorded_in_sql(env: dict[str, str], db_url: str) -> None:
    """On SQLite and PostgreSQL: a digest's deferral and its delivery are each a log row."""
    from worker.db import migrate

    migrate.upgrade(db_url)
    runtime = make_rig(env, TASKMASTER_DATABASE_URL=db_url)
    try:
        r = Rig(runtime, services(runtime))
        r.user("u1")
        r.send(T0, "n1")
        r.send(T0, "n2")
        r.run_due(T0 + timedelta(minutes=5))
        rows = [(row.notification_id, row.decision, row.reason) for row in r.log()]
        assert rows == [
            ("n1", "deferred", "digest"),
            ("n2", "deferred", "digest"),
            ("n1", "delivered", "digest"),
            ("n2", "delivered", "digest"),
        ]
        assert r.log()[0].decided_until == T0 + timedelta(minutes=5)
    finally:
        runtime.close()


def test_quiet_hours_across_the_spring_change_end_at_local_seven(rig: Rig) -> None:
    """New York springs forward on 2026-03-08: a hold from 23:00 ends at 07:00 EDT (11:00 UTC)."""
    rig.user("u1", tz="America/New_York", quiet_hours={"start": "22:00", "end": "07:00"})
    rig.send(datetime(2026, 3, 8, 4, 0, tzinfo=UTC), "n1", priority="high")  # 23:00 EST
    (deferred,) = rig.of("notification.deferred")
    assert deferred["until"] == "2026-03-08T11:00:00Z"
    assert rig.run_due(datetime(2026, 3, 8, 10, 59, tzinfo=UTC)) == 0
    assert rig.run_due(datetime(2026, 3, 8, 11, 0, tzinfo=UTC)) == 1
    assert len(rig.emails()) == 1


def test_push_goes_to_push_send_and_no_device_is_suppressed(rig: Rig) -> None:
    """Push with a registered device enqueues push.send; a user without one is suppressed early."""
    from worker.db.users import PushToken

    rig.user("u1", channels={"email": False, "push": True, "webhook": False})
    rig.user("u2", channels={"email": False, "push": True, "webhook": False})
    with Session(rig.runtime.db) as session, session.begin():
        session.add(PushToken(user_id="u1", token="tok-1", platform="android"))
    rig.send(T0, "n1", priority="urgent", url="https://app.example.com/t/1")
    rig.send(T0, "n2", priority="urgent", user_id="u2")
    (push,) = [m["kwargs"]["data"] for m in rig.queued("push.send")]
    assert push["user_id"] == "u1" and push["notification_id"] == "n1"
    assert push["url"] == "https://app.example.com/t/1"
    suppressed = [e for e in rig.of("notification.suppressed") if e["channel"] == "push"]
    assert [(e["user_id"], e["reason"]) for e in suppressed] == [("u2", "no_address")]


def test_metrics_count_notifications_and_deliveries(rig: Rig) -> None:
    """Three digested notifications and one delivery move the batching-ratio counters 3:1."""
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        value("taskmaster_notification_deliveries_total", channel="email", digest="true"),
        value("taskmaster_notification_delivered_items_total", channel="email"),
    )
    rig.user("u1")
    for n in range(3):
        rig.send(T0, f"n{n}")
    rig.run_due(T0 + timedelta(minutes=5))
    after = (
        value("taskmaster_notification_deliveries_total", channel="email", digest="true"),
        value("taskmaster_notification_delivered_items_total", channel="email"),
    )
    assert (after[0] - before[0], after[1] - before[1]) == (1, 3)
    assert value("taskmaster_notification_decision_seconds_count") >= 3


def test_unknown_user_is_retried_then_ends_with_notification_failed(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    """Through real workers: NotReady retries for the max age, then notification.failed, no job.dead."""
    for d in open_daemon(env, TASKMASTER_NOT_READY_MAX_AGE="0.5", TASKMASTER_JOB_MIN_BACKOFF="0.05"):
        d.worker.start()
        d.submit(
            redis_client,
            {
                "type": "notification.send",
                "id": "late-1",
                "data": {"user_id": "nobody", "category": "x", "title": "t", "channels": ["email"]},
            },
        )
        failed = wait_for(
            lambda: [e for e in events(redis_client) if e["type"] == "notification.failed"], timeout_s=15
        )
        assert failed[0]["data"]["channel"] == "email" and failed[0]["data"]["id"] == "late-1"
        assert not [e for e in events(redis_client) if e["type"] == "job.dead"]
