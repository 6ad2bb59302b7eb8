"""Delivery records: one row per message and recipient, the memory that makes a send happen once.

The attempt is recorded before the provider is called and reconciled after: a job retried after
a crash finds its recipients `sent` and sends nothing, or finds them `queued` with attempts
already counted and sends again under the same Message-ID and idempotency key (the provider
deduplicates where it can: Resend). Two short transactions per email, each one statement per
kind of change, to keep the SQL cost of the hot path small; the single emails of every
thread of a process share transactions (worker/db/group.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from jobs.email.tracking.suppressions import address_key
from worker.db.group import GroupCommit, Kind
from worker.db.messaging import EmailDelivery
from worker.db.tracking import Suppression

MAX_ERROR_CHARS = 2000
# Rows per statement of the batched calls: well under SQLite's 32,766 and PostgreSQL's 65,535
# bound parameters at 7 a row.
ROWS_PER_STATEMENT = 1000


@dataclass(frozen=True)
class Attempt:
    """One email of a batch: its key, Message-ID and recipients."""

    idempotency_key: str
    message_id: str
    recipients: Sequence[str]


@dataclass(frozen=True)
class Outcome:
    """How a batch's attempt ended for one recipient (``finish_many``)."""

    idempotency_key: str
    recipient: str
    status: str
    provider: str | None = None
    provider_message_id: str | None = None
    error: str | None = None


# What begin returns for one email: the recipients to send to, and the suppressed ones with why.
Begun = tuple[list[str], dict[str, str]]


class DeliveryRecords:
    """Delivery records in SQL, for a chain with a real provider.

    Single emails (``begin``, ``finish``) go through the process's group commit: the records of
    every worker thread share transactions and statements. Batches (``begin_many``,
    ``finish_many``) are one transaction of their own already.
    """

    def __init__(self, engine: Engine, writer: GroupCommit | None = None) -> None:
        self._engine = engine
        self._writer = writer
        insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        self._begin_kind: Kind[Attempt, Begun] = Kind(
            "email.records.begin", lambda conn, attempts: _begin_many(conn, insert, attempts), rank=1
        )

    def begin(self, idempotency_key: str, message_id: str, recipients: Sequence[str]) -> Begun:
        """Record an attempt for each recipient not done yet.

        Returns the recipients still to send to (new, or queued by an earlier attempt), and the
        recipients on the suppression list with the reason, read in the same transaction.
        """
        attempt = Attempt(idempotency_key, message_id, recipients)
        if self._writer is None:
            return self.begin_many([attempt])[0]
        return self._writer.write(self._begin_kind, attempt)

    def finish(
        self,
        idempotency_key: str,
        recipients: Sequence[str],
        *,
        status: str,
        provider: str | None = None,
        provider_message_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """Mark recipients still queued sent (with the provider's id) or failed (with the reason).

        Only queued rows change: a provider event (delivered, bounced) may already have arrived.
        """
        outcomes = [
            Outcome(idempotency_key, r, status, provider, provider_message_id, error)
            for r in dict.fromkeys(recipients)
        ]
        if not outcomes:
            return
        if self._writer is None:
            self.finish_many(outcomes)
        else:
            self._writer.write(_FINISH, outcomes)

    def begin_many(self, attempts: Sequence[Attempt]) -> list[Begun]:
        """``begin`` for many emails in one transaction; one answer per attempt, in order."""
        with self._engine.begin() as conn:
            return list(self._begin_kind.run_many(conn, attempts))

    def finish_many(self, outcomes: Sequence[Outcome]) -> None:
        """``finish`` for many recipients of many emails in one transaction (one executemany)."""
        if outcomes:
            with self._engine.begin() as conn:
                _finish_many(conn, outcomes)


def _begin_many(conn: Connection, insert: Any, attempts: Sequence[Attempt]) -> list[Begun]:
    now = datetime.now(UTC)
    unique = [list(dict.fromkeys(a.recipients)) for a in attempts]
    rows = [
        {
            "idempotency_key": a.idempotency_key,
            "message_id": a.message_id,
            "recipient": recipient,
            "status": "queued",
            "attempts": 1,
            "created_at": now,
            "updated_at": now,
        }
        for a, recipients in zip(attempts, unique, strict=True)
        for recipient in recipients
    ]
    pending: set[tuple[str, str]] = set()
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        upsert = (
            insert(EmailDelivery)
            .values(rows[start : start + ROWS_PER_STATEMENT])
            .on_conflict_do_update(
                index_elements=["idempotency_key", "recipient"],
                set_={"attempts": EmailDelivery.attempts + 1, "updated_at": now},
                where=EmailDelivery.status == "queued",
            )
            .returning(EmailDelivery.idempotency_key, EmailDelivery.recipient)
        )
        pending.update((key, recipient) for key, recipient in conn.execute(upsert))
    blocked = _suppressed_many(conn, [r for key, r in pending])
    answers: list[Begun] = []
    for a, recipients in zip(attempts, unique, strict=True):
        mine = [r for r in recipients if (a.idempotency_key, r) in pending]
        answers.append((mine, {r: blocked[r] for r in mine if r in blocked}))
    return answers


def _finish_many(conn: Connection, outcomes: Sequence[Outcome]) -> None:
    now = datetime.now(UTC)
    params = [
        {
            "b_key": o.idempotency_key,
            "b_recipient": o.recipient,
            "b_status": o.status,
            "b_provider": o.provider,
            "b_provider_message_id": o.provider_message_id,
            "b_sent_at": now if o.status == "sent" else None,
            "b_error": None if o.error is None else o.error[:MAX_ERROR_CHARS],
        }
        for o in outcomes
    ]
    # Only queued rows change; a value not given keeps the row's own.
    statement = (
        update(EmailDelivery)
        .where(
            EmailDelivery.idempotency_key == bindparam("b_key"),
            EmailDelivery.recipient == bindparam("b_recipient"),
            EmailDelivery.status == "queued",
        )
        .values(
            status=bindparam("b_status", type_=EmailDelivery.status.type),
            updated_at=now,
            provider=func.coalesce(
                bindparam("b_provider", type_=EmailDelivery.provider.type), EmailDelivery.provider
            ),
            provider_message_id=func.coalesce(
                bindparam("b_provider_message_id", type_=EmailDelivery.provider_message_id.type),
                EmailDelivery.provider_message_id,
            ),
            sent_at=func.coalesce(
                bindparam("b_sent_at", type_=EmailDelivery.sent_at.type), EmailDelivery.sent_at
            ),
            last_error=func.coalesce(
                bindparam("b_error", type_=EmailDelivery.last_error.type), EmailDelivery.last_error
            ),
        )
    )
    conn.execute(statement, params)


def _finish_grouped(conn: Connection, finishes: Sequence[Sequence[Outcome]]) -> list[None]:
    _finish_many(conn, [o for outcomes in finishes for o in outcomes])
    return [None] * len(finishes)


# Finishes run before begins in a shared transaction: a begin then never sees a recipient as
# still queued that a finish of the same transaction marks sent.
_FINISH: Kind[Sequence[Outcome], None] = Kind("email.records.finish", _finish_grouped, rank=0)


class OutboxRecords:
    """For a chain of the outbox alone: the `.eml` file, named by the idempotency key, is the
    record that the email was handed over (its provider writes it once). Keeping SQL rows too
    would serialise every email of every worker on SQLite's single write lock for nothing: no
    provider event ever follows an outbox email. Suppressions still apply; whether there are
    any at all is checked at most once a second, so an empty list costs no query per email (a
    suppression added meanwhile applies within that second)."""

    RECHECK_S = 1.0

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._none_until = 0.0  # monotonic time until which the list is known to be empty

    def begin(self, idempotency_key: str, message_id: str, recipients: Sequence[str]) -> Begun:
        return self.begin_many([Attempt(idempotency_key, message_id, recipients)])[0]

    def finish(
        self,
        idempotency_key: str,
        recipients: Sequence[str],
        *,
        status: str,
        provider: str | None = None,
        provider_message_id: str | None = None,
        error: str | None = None,
    ) -> None:
        return None

    def begin_many(self, attempts: Sequence[Attempt]) -> list[Begun]:
        unique = [list(dict.fromkeys(a.recipients)) for a in attempts]
        blocked: dict[str, str] = {}
        if time.monotonic() >= self._none_until:
            with self._engine.connect() as conn:
                if conn.execute(select(Suppression.address).limit(1)).first() is None:
                    self._none_until = time.monotonic() + self.RECHECK_S
                else:
                    blocked = _suppressed_many(conn, [r for recipients in unique for r in recipients])
        return [(recipients, {r: blocked[r] for r in recipients if r in blocked}) for recipients in unique]

    def finish_many(self, outcomes: Sequence[Outcome]) -> None:
        return None


Records = DeliveryRecords | OutboxRecords


def _suppressed(conn: Connection, recipients: Sequence[str]) -> dict[str, str]:
    """Which recipients are on the suppression list, and why."""
    by_key = {address_key(r): r for r in recipients}
    rows = conn.execute(
        select(Suppression.address, Suppression.reason).where(Suppression.address.in_(list(by_key)))
    ).all()
    return {by_key[address]: reason for address, reason in rows}


def _suppressed_many(conn: Connection, recipients: Sequence[str]) -> dict[str, str]:
    """``_suppressed`` for any number of recipients, a bounded IN list at a time."""
    unique = list(dict.fromkeys(recipients))
    blocked: dict[str, str] = {}
    for start in range(0, len(unique), ROWS_PER_STATEMENT):
        blocked.update(_suppressed(conn, unique[start : start + ROWS_PER_STATEMENT]))
    return blocked
