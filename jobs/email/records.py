"""Delivery records: one row per message and recipient, the memory that makes a send happen once.

The attempt is recorded before the provider is called and reconciled after: a job retried after
a crash finds its recipients `sent` and sends nothing, or finds them `queued` with attempts
already counted and sends again under the same Message-ID and idempotency key (the provider
deduplicates where it can: Resend). Two short transactions per email, each one statement per
kind of change, to keep the SQL cost of the hot path small.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from jobs.email.tracking.suppressions import address_key
from worker.db.messaging import EmailDelivery
from worker.db.tracking import Suppression

MAX_ERROR_CHARS = 2000


class DeliveryRecords:
    """Delivery records in SQL, for a chain with a real provider."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    def begin(
        self, idempotency_key: str, message_id: str, recipients: Sequence[str]
    ) -> tuple[list[str], dict[str, str]]:
        """Record an attempt for each recipient not done yet, in one statement.

        Returns the recipients still to send to (new, or queued by an earlier attempt), and the
        recipients on the suppression list with the reason, read in the same transaction.
        """
        now = datetime.now(UTC)
        unique = list(dict.fromkeys(recipients))
        rows = [
            {
                "idempotency_key": idempotency_key,
                "message_id": message_id,
                "recipient": recipient,
                "status": "queued",
                "attempts": 1,
                "created_at": now,
                "updated_at": now,
            }
            for recipient in unique
        ]
        insert = self._insert(EmailDelivery).values(rows)
        # A new recipient is inserted; one still queued counts another attempt; one already
        # done is left alone and not returned (the WHERE of DO UPDATE), so it is not sent again.
        upsert = insert.on_conflict_do_update(
            index_elements=["idempotency_key", "recipient"],
            set_={"attempts": EmailDelivery.attempts + 1, "updated_at": now},
            where=EmailDelivery.status == "queued",
        ).returning(EmailDelivery.recipient)
        with self._engine.begin() as conn:
            pending = {row[0] for row in conn.execute(upsert)}
            blocked = _suppressed(conn, unique)
        return [r for r in unique if r in pending], {r: why for r, why in blocked.items() if r in pending}

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
        if not recipients:
            return
        now = datetime.now(UTC)
        values: dict[str, object] = {"status": status, "updated_at": now}
        if provider is not None:
            values["provider"] = provider
        if provider_message_id is not None:
            values["provider_message_id"] = provider_message_id
        if status == "sent":
            values["sent_at"] = now
        if error is not None:
            values["last_error"] = error[:MAX_ERROR_CHARS]
        with self._engine.begin() as conn:
            conn.execute(
                update(EmailDelivery)
                .where(
                    EmailDelivery.idempotency_key == idempotency_key,
                    EmailDelivery.recipient.in_(list(recipients)),
                    EmailDelivery.status == "queued",
                )
                .values(**values)
            )


class OutboxRecords:
    """For a chain of the outbox alone: the `.eml` file, named by the idempotency key, is the
    record that the email was handed over (its provider writes it once). Keeping SQL rows too
    would serialise every email of every worker on SQLite's single write lock for nothing: no
    provider event ever follows an outbox email. Suppressions still apply."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def begin(
        self, idempotency_key: str, message_id: str, recipients: Sequence[str]
    ) -> tuple[list[str], dict[str, str]]:
        unique = list(dict.fromkeys(recipients))
        with self._engine.connect() as conn:
            return unique, _suppressed(conn, unique)

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


Records = DeliveryRecords | OutboxRecords


def _suppressed(conn: Connection, recipients: Sequence[str]) -> dict[str, str]:
    """Which recipients are on the suppression list, and why."""
    by_key = {address_key(r): r for r in recipients}
    rows = conn.execute(
        select(Suppression.address, Suppression.reason).where(Suppression.address.in_(list(by_key)))
    ).all()
    return {by_key[address]: reason for address, reason in rows}
