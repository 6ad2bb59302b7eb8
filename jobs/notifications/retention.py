"""Purging notification and delivery records past TASKMASTER_RETENTION, keeping daily counts.

Each batch counts its rows into ``notification_daily_counts`` and deletes them in one
transaction, so a retried or concurrent run never counts a row twice: a row is either still
there (not counted yet) or gone (counted). `user.delete` folds a user's rows the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import ColumnElement, Connection, Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from worker.context import JobContext
from worker.db.models import EmailDelivery, NotificationLog
from worker.db.notifications import NotificationDailyCount
from worker.logging import get_logger
from worker.registry import job

log = get_logger(__name__)

BATCH_ROWS = 1000


@dataclass(frozen=True)
class Source:
    """A table whose rows are folded into counts: how to read a row's day, channel, decision."""

    name: str
    model: Any
    created_at: Any
    channel: Any
    decision: Any


NOTIFICATION_LOG = Source(
    "notification_log",
    NotificationLog,
    NotificationLog.created_at,
    NotificationLog.channel,
    NotificationLog.decision,
)
# An email delivery is the email channel; its status stands for the decision.
EMAIL_DELIVERIES = Source(
    "email_deliveries", EmailDelivery, EmailDelivery.created_at, None, EmailDelivery.status
)
SOURCES = (NOTIFICATION_LOG, EMAIL_DELIVERIES)


class RetentionRun(BaseModel):
    """The internal `notifications.retention` job takes no data."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def fold_batch(connection: Connection, source: Source, where: ColumnElement[bool], limit: int) -> int:
    """Count up to ``limit`` rows of ``source`` matching ``where`` into the daily counts and
    delete them, in the caller's transaction; return how many went."""
    channel = source.channel
    columns = [source.model.id, source.created_at, source.decision]
    if channel is not None:
        columns.append(channel)
    rows = connection.execute(select(*columns).where(where).order_by(source.model.id).limit(limit)).all()
    if not rows:
        return 0
    counts: Counter[tuple[date, str, str]] = Counter()
    for row in rows:
        day = row[1].astimezone(UTC).date()
        counts[(day, row[3] if channel is not None else "email", row[2])] += 1
    add_counts(connection, source.name, counts)
    ids = [row[0] for row in rows]
    connection.execute(delete(source.model).where(source.model.id.in_(ids)))
    return len(ids)


def add_counts(connection: Connection, source: str, counts: Counter[tuple[date, str, str]]) -> None:
    """Add to the daily counts: an upsert that sums, on either dialect."""
    values = [
        {"day": day, "source": source, "channel": channel, "decision": decision, "count": n}
        for (day, channel, decision), n in sorted(counts.items())
    ]
    table = NotificationDailyCount.__table__
    insert: Any = (postgresql if connection.dialect.name == "postgresql" else sqlite).insert(table)
    statement = insert.values(values)
    statement = statement.on_conflict_do_update(
        index_elements=["day", "source", "channel", "decision"],
        set_={"count": table.c.count + statement.excluded.count},
    )
    connection.execute(statement)


def purge(engine: Engine, cutoff: datetime, *, batch_rows: int = BATCH_ROWS) -> dict[str, int]:
    """Fold every record created before ``cutoff`` into the daily counts, ``batch_rows`` per
    transaction so that no statement holds locks for long; return the rows removed per table."""
    removed: dict[str, int] = {}
    for source in SOURCES:
        total = 0
        while True:
            with engine.begin() as connection:
                n = fold_batch(connection, source, source.created_at < cutoff, batch_rows)
            total += n
            if n < batch_rows:
                break
        removed[source.name] = total
    return removed


def daily_counts(engine: Engine) -> list[tuple[date, str, str, str, int]]:
    """Every daily count, for `status`-like reports and tests."""
    t = NotificationDailyCount
    query = select(t.day, t.source, t.channel, t.decision, t.count).order_by(
        t.day, t.source, t.channel, t.decision
    )
    with engine.connect() as connection:
        return [(r[0], r[1], r[2], r[3], r[4]) for r in connection.execute(query)]


@job("notifications.retention", RetentionRun, queue="bulk", public=False)
def run_retention(ctx: JobContext, data: RetentionRun) -> None:
    """Purge what is older than TASKMASTER_RETENTION and report how much went."""
    cutoff = datetime.now(UTC) - timedelta(seconds=ctx.runtime.settings.retention)
    removed = purge(ctx.runtime.db, cutoff)
    log.info("notifications.retention", cutoff=cutoff.isoformat(), **removed)
    ctx.emit("notifications.retention", {"cutoff": cutoff.isoformat(), "removed": removed})
