"""Delivery tracking: the addresses no email goes to any more, and the provider events seen.

A provider re-delivers its webhooks (on a timeout, an error, or just because): the unique
(provider, provider event id) of ``ProviderEvent`` is what makes one event count once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from worker.db.base import Base, one_of, surrogate_key, utcnow
from worker.db.users import EMAIL

# The reasons of the public contract (`suppression.add`): a hard bounce, a spam complaint, or
# the host's own decision.
SUPPRESSION_REASONS = ("bounce", "complaint", "manual")


class Suppression(Base):
    """An address that no email goes to until the host lifts it (`suppression.delete`).

    ``address`` is stored lower-cased: providers treat addresses case-insensitively, and a
    suppression that a different spelling slipped past would be no suppression.
    """

    __tablename__ = "email_suppressions"
    __table_args__ = (one_of("reason", SUPPRESSION_REASONS),)

    id: Mapped[int] = surrogate_key()
    address: Mapped[str] = mapped_column(EMAIL, unique=True)
    reason: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str | None] = mapped_column(String(32))  # None when the host added it
    source_event_id: Mapped[str | None] = mapped_column(String(255))  # the provider event that caused it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProviderEvent(Base):
    """One provider event recorded, by the provider's own id for it (see jobs/email/tracking)."""

    __tablename__ = "email_provider_events"
    __table_args__ = (UniqueConstraint("provider", "provider_event_id"),)

    id: Mapped[int] = surrogate_key()
    provider: Mapped[str] = mapped_column(String(32))
    provider_event_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(32))  # the normalised kind: delivered, bounced, ...
    # Indexed for purging what is older than TASKMASTER_RETENTION.
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
