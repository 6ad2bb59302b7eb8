"""What the daemon sends: email templates and deliveries, the notification log, campaigns and
outbound webhook endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worker.db.base import Base, Timestamps, one_of, surrogate_key, utcnow
from worker.db.users import EMAIL, HOST_ID, User, user_fk

DELIVERY_STATUSES = ("queued", "sent", "delivered", "bounced", "complained", "failed")


class EmailTemplate(Base):
    """One version of a named template; `template.upsert` adds a version, old ones are kept so
    that a delivery or campaign can be traced to the exact text it used."""

    __tablename__ = "email_templates"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = surrogate_key()
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int]
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmailDelivery(Timestamps, Base):
    """One email to one recipient: the record that makes a send happen once.

    The unique (idempotency key, recipient) is what stops a retried job from sending again.
    """

    __tablename__ = "email_deliveries"
    __table_args__ = (
        UniqueConstraint("idempotency_key", "recipient"),
        Index(None, "provider", "provider_message_id"),
        one_of("status", DELIVERY_STATUSES),
    )

    id: Mapped[int] = surrogate_key()
    idempotency_key: Mapped[str] = mapped_column(String(255))
    message_id: Mapped[str] = mapped_column(String(255), index=True)  # our Message-ID header
    recipient: Mapped[str] = mapped_column(EMAIL)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    provider: Mapped[str | None] = mapped_column(String(32))
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    campaign_id: Mapped[str | None] = mapped_column(
        HOST_ID, ForeignKey("campaigns.id", ondelete="SET NULL"), index=True
    )
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]

    campaign: Mapped[Campaign | None] = relationship()


class NotificationLog(Base):
    """Each decision taken on a notification for one channel, and why: frequency caps count
    these rows, and `explain` shows them."""

    __tablename__ = "notification_log"
    __table_args__ = (Index(None, "user_id", "created_at"),)

    id: Mapped[int] = surrogate_key()
    notification_id: Mapped[str] = mapped_column(String(255), index=True)
    user_id: Mapped[str] = user_fk(index=False)
    category: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str] = mapped_column(String(16))  # delivered, deferred, suppressed, digested
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_until: Mapped[datetime | None]  # a deferral's end

    user: Mapped[User] = relationship()


class Campaign(Timestamps, Base):
    """A broadcast email campaign; its id is the host's, so that later jobs can name it."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(HOST_ID, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    template_name: Mapped[str] = mapped_column(String(128))
    template_version: Mapped[int | None]  # pinned when the campaign starts
    audience: Mapped[dict[str, Any]] = mapped_column(default=dict)
    total: Mapped[int] = mapped_column(default=0)
    sent: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class WebhookEndpoint(Timestamps, Base):
    """An outbound webhook endpoint; the signing secret is stored encrypted."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(HOST_ID, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[bytes]
    user_id: Mapped[str | None] = user_fk(nullable=True)  # None: receives every user's events
    categories: Mapped[list[str]] = mapped_column(default=list)  # empty: every category
    enabled: Mapped[bool] = mapped_column(default=True)
    failing_since: Mapped[datetime | None]

    user: Mapped[User | None] = relationship()
