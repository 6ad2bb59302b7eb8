"""The suppression list: addresses that no email goes to until the host lifts them.

A hard bounce or a spam complaint puts an address here (jobs/email/tracking/record.py), so
does the host (`suppression.add`); only the host takes one off (`suppression.delete`). The
email sender asks ``suppressed()`` before each send. Addresses are compared lower-cased.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from jobs.email.tracking.inserts import insert_new
from worker.db.tracking import SUPPRESSION_REASONS, Suppression

# Well below the bound-parameter limits of SQLite (32766) and PostgreSQL (65535).
_CHUNK = 500


def address_key(address: str) -> str:
    """How an address is stored and compared."""
    return address.strip().lower()


def suppressed(session: Session, addresses: Iterable[str]) -> dict[str, str]:
    """Which of ``addresses`` are suppressed: each, as given, mapped to its reason."""
    given: dict[str, list[str]] = {}
    for address in addresses:
        given.setdefault(address_key(address), []).append(address)
    keys = list(given)
    out: dict[str, str] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        rows = session.execute(
            select(Suppression.address, Suppression.reason).where(Suppression.address.in_(chunk))
        )
        for key, reason in rows:
            for address in given[key]:
                out[address] = reason
    return out


def add(
    session: Session,
    address: str,
    reason: str,
    *,
    provider: str | None = None,
    source_event_id: str | None = None,
) -> bool:
    """Suppress ``address``; False when it already was (the first reason stays)."""
    if reason not in SUPPRESSION_REASONS:
        raise ValueError(f"reason must be one of {', '.join(SUPPRESSION_REASONS)}, not {reason!r}")
    values = {
        "address": address_key(address),
        "reason": reason,
        "provider": provider,
        "source_event_id": source_event_id,
    }
    return insert_new(session, Suppression, values, ["address"])


def remove(session: Session, address: str) -> bool:
    """Lift the suppression of ``address``; False when it was not suppressed."""
    statement = delete(Suppression).where(Suppression.address == address_key(address))
    return session.execute(statement.returning(Suppression.id)).first() is not None


def listing(session: Session, *, reason: str | None = None) -> list[Suppression]:
    """Every suppression (or those of one reason), oldest first."""
    query = select(Suppression).order_by(Suppression.created_at, Suppression.address)
    if reason is not None:
        query = query.where(Suppression.reason == reason)
    return list(session.scalars(query))
