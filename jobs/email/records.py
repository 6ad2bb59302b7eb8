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

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from worker.db.messaging import EmailDelivery

# A recipient in one of these states needs nothing more from the sender.
DONE = frozenset({"sent", "delivered", "bounced", "complained", "failed"})
MAX_ERROR_CHARS = 2000


class DeliveryRecords:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert

    def begin(self, idempotency_key: str, message_id: str, recipients: Sequence[str]) -> dict[str, str]:
        """Record an attempt for each recipient not done yet; return every recipient's status."""
        now = datetime.now(UTC)
        rows = [
            {
                "idempotency_key": idempotency_key,
                "message_id": message_id,
                "recipient": recipient,
                "status": "queued",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for recipient in dict.fromkeys(recipients)
        ]
        with self._engine.begin() as conn:
            conn.execute(self._insert(EmailDelivery).values(rows).on_conflict_do_nothing())
            conn.execute(
                update(EmailDelivery)
                .where(EmailDelivery.idempotency_key == idempotency_key, EmailDelivery.status == "queued")
                .values(attempts=EmailDelivery.attempts + 1, updated_at=now)
            )
            found = conn.execute(
                select(EmailDelivery.recipient, EmailDelivery.status).where(
                    EmailDelivery.idempotency_key == idempotency_key
                )
            ).all()
        return {recipient: status for recipient, status in found}

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
