"""Retention: old notification and delivery records go, in batches, leaving daily counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from jobs.notifications.retention import daily_counts, purge
from tests.helpers import events, wait_for
from tests.test_notification_users import engine, harness, notif_env, run_job  # noqa: F401
from tests.test_worker_inprocess import Harness
from worker.db.models import EmailDelivery, NotificationLog, User
from worker.submit import enqueue

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _records(db: Engine, now: datetime = NOW) -> None:
    """Five log rows and two deliveries 100 days before ``now`` (two days apart), one of each at ``now``."""
    old = now - timedelta(days=100)
    with Session(db) as session, session.begin():
        session.add(User(id="u-1", email="a@example.org"))
        for i, (channel, decision) in enumerate(
            [
                ("email", "delivered"),
                ("email", "delivered"),
                ("push", "deferred"),
                ("push", "suppressed"),
                ("email", "delivered"),
            ]
        ):
            at = old if i < 4 else old + timedelta(days=2)
            session.add(
                NotificationLog(
                    notification_id=f"n{i}",
                    user_id="u-1",
                    category="c",
                    channel=channel,
                    decision=decision,
                    created_at=at,
                )
            )
        session.add(
            NotificationLog(
                notification_id="new",
                user_id="u-1",
                category="c",
                channel="email",
                decision="delivered",
                created_at=now,
            )
        )
        for i, status in enumerate(["sent", "bounced"]):
            session.add(
                EmailDelivery(
                    idempotency_key=f"k{i}",
                    message_id=f"<{i}@x>",
                    recipient="a@example.org",
                    status=status,
                    created_at=old,
                )
            )
        session.add(
            EmailDelivery(
                idempotency_key="new",
                message_id="<n@x>",
                recipient="a@example.org",
                status="sent",
                created_at=now,
            )
        )


def _remaining(db: Engine) -> tuple[int, int]:
    with db.connect() as connection:
        logs = connection.execute(select(func.count()).select_from(NotificationLog)).scalar_one()
        sent = connection.execute(select(func.count()).select_from(EmailDelivery)).scalar_one()
    return logs, sent


def test_purge_counts_then_deletes_in_batches_and_is_idempotent(engine: Engine) -> None:  # noqa: F811
    """Records older than the cutoff become daily counts per channel and decision; a rerun changes nothing."""
    # Given old and recent records
    _records(engine)
    # When purged with a batch smaller than the old rows, twice
    removed = purge(engine, NOW - timedelta(days=90), batch_rows=2)
    again = purge(engine, NOW - timedelta(days=90), batch_rows=2)
    # Then only the recent records remain, and the old ones are counted once, without a user
    assert removed == {"notification_log": 5, "email_deliveries": 2}
    assert again == {"notification_log": 0, "email_deliveries": 0}
    assert _remaining(engine) == (1, 1)
    day = (NOW - timedelta(days=100)).date()
    assert daily_counts(engine) == [
        (day, "email_deliveries", "email", "bounced", 1),
        (day, "email_deliveries", "email", "sent", 1),
        (day, "notification_log", "email", "delivered", 2),
        (day, "notification_log", "push", "deferred", 1),
        (day, "notification_log", "push", "suppressed", 1),
        (day + timedelta(days=2), "notification_log", "email", "delivered", 1),
    ]


def test_the_retention_job_purges_and_reports(
    harness: Harness,  # noqa: F811
    redis_client: redis.Redis,
    engine: Engine,  # noqa: F811
) -> None:
    """notifications.retention, run by a worker, purges past TASKMASTER_RETENTION and reports counts."""
    # Given records 100 days old against the default 90-day retention, and recent ones
    _records(engine, datetime.now(UTC))
    # When the internal job runs (as schedules.yaml fires it)
    job_type = harness.runtime.registry.get("notifications.retention")
    assert job_type is not None and not job_type.public
    keys = harness.runtime.keys
    enqueue(redis_client, keys, job_type, {}, idempotency_key=None, idempotency_ttl_s=60)
    # Then it reports what it removed, and the recent records stay
    (event,) = wait_for(
        lambda: [e for e in events(redis_client) if e["type"] == "notifications.retention"], timeout_s=15
    )
    assert event["data"]["removed"] == {"notification_log": 5, "email_deliveries": 2}
    assert _remaining(engine) == (1, 1)
