"""user.delete: the user's id and address are found nowhere afterwards, in SQL or in Redis."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis
from sqlalchemy import JSON, Engine, String, Text, func, select
from sqlalchemy.orm import Session

from jobs.notifications.erasure import _tables_owned_by_users
from jobs.notifications.profiles import load_profile
from jobs.notifications.retention import daily_counts

# Fixtures shared with the users tests (imported by name so that pytest finds them here).
from tests.helpers import redis_hits
from tests.test_notification_users import engine, harness, notif_env, run_job  # noqa: F401
from tests.test_worker_inprocess import Harness
from worker.db.models import (
    Base,
    CalendarEvent,
    CalendarSync,
    Conflict,
    Contact,
    EmailDelivery,
    FocusBlock,
    Insight,
    NotificationLog,
    OAuthConnection,
    ProductivityPattern,
    Suppression,
    Task,
    WebhookEndpoint,
)
from worker.due import DueStore

UID = "user-8f3a2c"
ADDRESS = "erin.example@example.org"
OTHER = "user-77b1d0"
OTHER_ADDRESS = "kept@example.org"


def _owned_rows(session: Session, uid: str, address: str, n: int) -> None:
    """One row in every table that references users, each naming the user where it can."""
    now = datetime.now(UTC)
    conn = OAuthConnection(user_id=uid, provider="google", access_token=b"x", refresh_token=b"y")
    session.add(conn)
    session.flush()
    sync = CalendarSync(connection_id=conn.id, calendar_id=address)
    task = Task(id=f"task-{uid}", user_id=uid, title=f"call {address}")
    session.add_all([sync, task])
    session.flush()
    event = CalendarEvent(
        user_id=uid,
        sync_id=sync.id,
        provider_event_id=f"ev-{uid}",
        start_at=now,
        end_at=now,
        title=address,
        task_id=task.id,
    )
    session.add(event)
    session.flush()
    session.add_all(
        [
            Conflict(user_id=uid, task_id=task.id, event_id=event.id, kind="overlap"),
            Contact(
                user_id=uid, provider="google", provider_contact_id=f"c-{uid}", name=uid, emails=[address]
            ),
            FocusBlock(user_id=uid, start_at=now, end_at=now),
            ProductivityPattern(user_id=uid, weekday=1, hour=9),
            Insight(user_id=uid, week=date(2026, 1, 5), body={"user": uid, "email": address}),
            WebhookEndpoint(id=f"wh-{uid}", url=f"https://example.org/{uid}", secret=b"s", user_id=uid),
            Suppression(address=address, reason="manual"),
        ]
    )
    for i in range(n):
        session.add(
            NotificationLog(
                notification_id=f"n-{uid}-{i}",
                user_id=uid,
                category="task",
                channel="email",
                decision="delivered",
                reason=uid,
            )
        )
        session.add(
            EmailDelivery(
                idempotency_key=f"id:{uid}-{i}",
                message_id=f"<{uid}-{i}@x>",
                recipient=address,
                status="sent",
                last_error=address,
            )
        )


def _owned_keys(client: redis.Redis, h: Harness, uid: str, address: str) -> None:
    """Redis state naming the user: notification batches and holds, rate limits, due items."""
    item = json.dumps({"user_id": uid, "email": address, "title": "hi"})
    client.hset(f"taskmaster:notif:batch:{uid}:email", "n1", item)
    client.set(f"taskmaster:notif:hold:{uid}:push", item)
    client.zadd(f"taskmaster:rl:user:{uid}", {"a": 1})
    client.zadd("taskmaster:notif:due", {f"{uid}:email": 1})
    client.rpush("taskmaster:notif:outbox", item)
    client.sadd("taskmaster:notif:users", uid)
    client.hset(f"taskmaster:notif:direct:d-{uid}-1", mapping={"m:user": uid, "n1": item})
    store = DueStore(client, h.runtime.keys)
    job_type = h.runtime.registry.get("user.upsert")
    assert job_type is not None
    later = datetime.now(UTC) + timedelta(hours=1)
    store.put(f"notif:flush:{uid}:email", job_type, {"user_id": uid}, later)
    store.put(f"held-{address}", job_type, {"user_id": uid, "email": address}, later)


def _sql_hits(db: Engine, needles: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(table, column, value) of every string or JSON value naming one of ``needles``."""
    hits = []
    with db.connect() as connection:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, (String, Text, JSON))]
            for row in connection.execute(select(*columns)) if columns else []:
                for column, value in zip(columns, row, strict=True):
                    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
                    if any(n.lower() in text.lower() for n in needles):
                        hits.append((table.name, column.name, text))
    return hits


def test_delete_leaves_no_trace_of_the_user(
    harness: Harness,  # noqa: F811
    redis_client: redis.Redis,
    engine: Engine,  # noqa: F811
) -> None:
    """After user.delete neither the user's id nor address is in any table or Redis key or value."""
    # Given two users with preferences, tokens, a row in every table and Redis state each
    for uid, address in ((UID, ADDRESS), (OTHER, OTHER_ADDRESS)):
        upsert = {"user_id": uid, "email": address, "name": f"name {uid}", "push_tokens": [f"tok-{uid}"]}
        run_job(harness, redis_client, "user.upsert", upsert, "user.upserted")
        run_job(
            harness,
            redis_client,
            "preferences.update",
            {"user_id": uid, "digest": "hourly"},
            "preferences.updated",
        )
        with Session(engine) as session, session.begin():
            _owned_rows(session, uid, address, n=3)
        _owned_keys(redis_client, harness, uid, address)
    with engine.connect() as connection:
        for table, column in _tables_owned_by_users():
            count = connection.execute(
                select(func.count()).select_from(table).where(table.c[column] == UID)
            ).scalar()
            assert count, f"the test gives {table.name} no row of the user: add one"
    # When the user is deleted
    deleted = run_job(harness, redis_client, "user.delete", {"user_id": UID}, "user.deleted")
    # Then SQL holds the id only as the erased users row's key, and the address nowhere
    hits = _sql_hits(engine, (UID, ADDRESS))
    assert hits == [("users", "id", UID)], hits
    profile = load_profile(engine, UID)
    assert profile is not None and profile.erased and profile.email is None and profile.push_tokens == ()
    # And Redis names the user only in events, by id (the host's record of what happened)
    hits = list(redis_hits(redis_client, (UID, ADDRESS)))
    assert all(key == "taskmaster:events" for key, _ in hits), hits
    assert not [v for _, v in hits if ADDRESS in v]
    assert (
        deleted["data"]["rows"]["notification_log"] == 3 and deleted["data"]["rows"]["email_deliveries"] == 3
    )
    assert DueStore(redis_client, harness.runtime.keys).count() == 2  # the other user's two items
    # And the other user is untouched, and only anonymous counts remain of the erased one's log
    assert {t for t, _, _ in _sql_hits(engine, (OTHER,))} >= {
        "notification_log",
        "tasks",
        "contacts",
        "insights",
    }
    assert len(list(redis_hits(redis_client, (OTHER_ADDRESS,)))) >= 6
    counts = {(source, decision): n for _, source, _, decision, n in daily_counts(engine)}
    assert counts == {("notification_log", "delivered"): 3, ("email_deliveries", "sent"): 3}


def test_an_upsert_after_the_delete_does_not_bring_the_user_back(
    harness: Harness,  # noqa: F811
    redis_client: redis.Redis,
    engine: Engine,  # noqa: F811
) -> None:
    """A user deleted before their upsert arrives stays erased: the late upsert is skipped."""
    run_job(harness, redis_client, "user.delete", {"user_id": UID}, "user.deleted")
    late: dict[str, Any] = {"user_id": UID, "email": ADDRESS, "name": "Erin"}
    event = run_job(harness, redis_client, "user.upsert", late, "user.upserted")
    assert event["data"]["skipped"] == "erased"
    profile = load_profile(engine, UID)
    assert profile is not None and profile.erased and profile.email is None and profile.name is None
    assert _sql_hits(engine, (ADDRESS,)) == []
