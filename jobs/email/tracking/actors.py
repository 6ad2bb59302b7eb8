"""The jobs of delivery tracking: `provider.event`, `suppression.add`, `suppression.delete`, and
the internal `tracking.purge_events`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from jobs.email.tracking import suppressions
from jobs.email.tracking.errors import PayloadError, TrackingError
from jobs.email.tracking.models import ProviderEventData, PurgeEvents, SuppressionAdd, SuppressionDelete
from jobs.email.tracking.normalize import normalize
from jobs.email.tracking.record import event_data, purge_events, record
from jobs.email.tracking.verify import check_settings, header_map
from worker.context import JobContext
from worker.db.session import make_sessionmaker
from worker.errors import PermanentError
from worker.logging import get_logger
from worker.registry import job, settings_check
from worker.settings import Settings

log = get_logger(__name__)


@settings_check
def check_tracking_settings(settings: Settings) -> None:
    check_settings(settings)


@job("provider.event", ProviderEventData, queue="default")
def provider_event(ctx: JobContext, data: ProviderEventData) -> None:
    """Record a verified webhook's events once each; report each as `email.<kind>`."""
    try:
        events = normalize(data.provider, header_map(data.headers), data.body)
    except PayloadError as exc:  # checked at intake already: only a changed release gets here
        raise PermanentError(str(exc)) from exc
    if not events:
        return
    with _transaction(ctx, f"recording {data.provider} events") as session:
        # Reported inside the transaction: should the commit fail, the retry reports again (the
        # events carry provider_event_id for that); reported after it, a crash in between would
        # lose them, since the retry finds them recorded.
        for recorded in record(session, events):
            ctx.emit(f"email.{recorded.event.kind}", event_data(recorded))


@job("suppression.add", SuppressionAdd, queue="default")
def add_suppression(ctx: JobContext, data: SuppressionAdd) -> None:
    """Suppress an address; report `suppression.added` (``new`` false if it already was)."""
    with _transaction(ctx, "adding a suppression") as session:
        new = suppressions.add(session, data.address, data.reason)
    # Reported once committed; a retry after a crash in between reports it again (new: false).
    address = suppressions.address_key(data.address)
    ctx.emit("suppression.added", {"address": address, "reason": data.reason, "new": new})


@job("suppression.delete", SuppressionDelete, queue="default")
def delete_suppression(ctx: JobContext, data: SuppressionDelete) -> None:
    """Lift a suppression; report `suppression.deleted` (``found`` false if there was none)."""
    with _transaction(ctx, "deleting a suppression") as session:
        found = suppressions.remove(session, data.address)
    ctx.emit("suppression.deleted", {"address": suppressions.address_key(data.address), "found": found})


@job("tracking.purge_events", PurgeEvents, queue="bulk", public=False)
def purge_provider_events(ctx: JobContext, data: PurgeEvents) -> None:
    """Forget provider events older than TASKMASTER_RETENTION (fired by schedules.yaml)."""
    before = datetime.now(UTC) - timedelta(seconds=ctx.runtime.settings.retention)
    with _transaction(ctx, "purging provider events") as session:
        purged = purge_events(session, before)
    log.info("tracking.events_purged", purged=purged, before=before.isoformat())


@contextmanager
def _transaction(ctx: JobContext, doing: str) -> Iterator[Session]:
    """One transaction; a database error becomes a TrackingError (retried) without the SQL,
    whose parameters hold addresses."""
    try:
        with make_sessionmaker(ctx.runtime.db).begin() as session:
            yield session
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise TrackingError(f"database error while {doing}: {first_line}") from exc
