"""Recording normalised events: once each, on the delivery they concern, on the suppression list.

Everything here runs in the caller's transaction, so an event is recorded with all its
effects or not at all (and then the job's retry records it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, delete, func, select
from sqlalchemy.orm import Session

from jobs.email.tracking import suppressions
from jobs.email.tracking.inserts import insert_new
from jobs.email.tracking.normalize import TrackingEvent
from worker.db.messaging import EmailDelivery
from worker.db.tracking import ProviderEvent
from worker.logging import get_logger

log = get_logger(__name__)

# The largest delivery id a reference may name (PostgreSQL's bigint).
_MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class Recorded:
    """One new event and what it changed: the delivery it concerns, if known."""

    event: TrackingEvent
    delivery: EmailDelivery | None


def record(session: Session, events: Sequence[TrackingEvent]) -> list[Recorded]:
    """Apply the events not seen before; those seen before (re-deliveries) change nothing."""
    groups = _by_event_id(events)
    new: set[str] = set()
    # Claimed in a fixed order, so that two bodies holding the same events in another order
    # (re-deliveries, batched differently) wait for each other instead of deadlocking.
    for event_id in sorted(groups):
        first = groups[event_id][0]
        values = {"provider": first.provider, "provider_event_id": event_id, "type": first.kind}
        if insert_new(session, ProviderEvent, values, ["provider", "provider_event_id"]):
            new.add(event_id)
        else:
            log.info("tracking.duplicate_event", provider=first.provider, provider_event_id=event_id)
    out: list[Recorded] = []
    for event_id, group in groups.items():
        if event_id not in new:
            continue
        for event in group:
            delivery = find_delivery(session, event)
            if delivery is not None:
                update_delivery(delivery, event)
            if event.suppression is not None:
                suppressions.add(
                    session,
                    event.recipient,
                    event.suppression,
                    provider=event.provider,
                    source_event_id=event.event_id,
                )
            out.append(Recorded(event, delivery))
    return out


def find_delivery(session: Session, event: TrackingEvent) -> EmailDelivery | None:
    """The delivery record an event concerns: by the reference we gave the provider, else by
    the provider's message id; always for the event's recipient."""
    same_recipient = func.lower(EmailDelivery.recipient) == event.recipient.lower()
    conditions: list[ColumnElement[bool]] = []
    ref = event.delivery_ref
    if ref is not None:
        if ref.isdigit() and int(ref) <= _MAX_ID:
            conditions.append(EmailDelivery.id == int(ref))
        else:
            conditions.append(EmailDelivery.idempotency_key == ref)
    if event.provider_message_id is not None:
        conditions.append(
            (EmailDelivery.provider == event.provider)
            & EmailDelivery.provider_message_id.in_(message_id_candidates(event))
        )
    for condition in conditions:
        # FOR UPDATE: a delivery's events (delivered, then opened) may be recorded at once.
        query = select(EmailDelivery).where(condition, same_recipient).limit(1).with_for_update()
        delivery = session.scalars(query).first()
        if delivery is not None:
            return delivery
    return None


def message_id_candidates(event: TrackingEvent) -> list[str]:
    """What we may have stored as the provider's message id.

    SendGrid answers a send with an ``X-Message-Id`` header, and each event's ``sg_message_id``
    starts with it ("14c5d75ce93.dfd.64b469" in "14c5d75ce93.dfd.64b469.filter0001.16648...0"),
    so every prefix that ends at a dot is a candidate; an indexed IN finds the stored one.
    """
    message_id = event.provider_message_id or ""
    if event.provider != "sendgrid":
        return [message_id]
    parts = message_id.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts) + 1)]


def update_delivery(delivery: EmailDelivery, event: TrackingEvent) -> None:
    """Move the delivery's status on; events arrive out of order, so none moves it back."""
    status = delivery.status
    if event.kind == "delivered":
        if status in ("queued", "sent", "failed"):
            delivery.status = "delivered"
        if delivery.delivered_at is None and event.occurred_at is not None:
            delivery.delivered_at = event.occurred_at
    elif event.kind == "bounced":
        if status != "complained":
            delivery.status = "bounced"
        delivery.last_error = _error(f"{event.bounce} bounce", event.detail)
    elif event.kind == "complained":
        delivery.status = "complained"
    elif event.kind == "dropped" and status in ("queued", "sent"):
        delivery.status = "failed"
        delivery.last_error = _error("dropped by the provider", event.detail)
    elif event.kind == "deferred" and status in ("queued", "sent"):
        delivery.last_error = _error("deferred", event.detail)


def event_data(recorded: Recorded) -> dict[str, Any]:
    """The data of the `email.<kind>` event reported for one recorded event."""
    event, delivery = recorded.event, recorded.delivery
    data: dict[str, Any] = {
        "recipient": event.recipient,
        "provider": event.provider,
        "provider_message_id": event.provider_message_id,
        # Reported at least once: a host that must count exactly dedupes on this.
        "provider_event_id": event.event_id,
    }
    if event.occurred_at is not None:
        data["occurred_at"] = event.occurred_at.isoformat().replace("+00:00", "Z")
    if delivery is not None:
        data["message_id"] = delivery.message_id
        data["delivery_id"] = delivery.id
    if event.bounce is not None:
        data["bounce"] = event.bounce
    if event.detail is not None:
        data["reason"] = event.detail
    if event.url is not None:
        data["url"] = event.url
    if event.suppression is not None:
        data["suppressed"] = True
    return data


def purge_events(session: Session, before: datetime) -> int:
    """Forget the provider events received before ``before``; return how many.

    Providers re-deliver within hours (SendGrid for up to a day), so the retention of delivery
    records is ample for dedupe.
    """
    statement = delete(ProviderEvent).where(ProviderEvent.received_at < before)
    options = {"synchronize_session": False}  # nothing of it is loaded in this session
    result = cast(CursorResult[Any], session.execute(statement, execution_options=options))
    return result.rowcount


def _by_event_id(events: Sequence[TrackingEvent]) -> dict[str, list[TrackingEvent]]:
    """Events grouped by their provider event id, in order, each (recipient, kind) once."""
    groups: dict[str, list[TrackingEvent]] = {}
    for event in events:
        group = groups.setdefault(event.event_id, [])
        if not any(e.recipient.lower() == event.recipient.lower() and e.kind == event.kind for e in group):
            group.append(event)
    return groups


def _error(what: str, detail: str | None) -> str:
    return f"{what}: {detail}" if detail else what
