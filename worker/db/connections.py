"""OAuth connections to providers, and what is synced through them: calendars and contacts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worker.db.base import PROVIDERS, Base, BigIntKey, Timestamps, one_of, surrogate_key
from worker.db.users import User, user_fk


class OAuthConnection(Timestamps, Base):
    """The tokens the host obtained for one user at one provider.

    Tokens are stored encrypted (the bytes are ciphertext); no token ever leaves this row in
    clear, and ``last_refresh_error`` holds the provider's error code and text, never a token.
    """

    __tablename__ = "oauth_connections"
    __table_args__ = (UniqueConstraint("user_id", "provider"), one_of("provider", PROVIDERS))

    id: Mapped[int] = surrogate_key()
    user_id: Mapped[str] = user_fk(index=False)
    provider: Mapped[str] = mapped_column(String(16))
    access_token: Mapped[bytes]
    refresh_token: Mapped[bytes | None]
    # Indexed for the periodic refresh of tokens that expire soon.
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    scopes: Mapped[list[str]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)  # active, reauth_required
    refreshed_at: Mapped[datetime | None]
    last_refresh_error: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User] = relationship()


class CalendarSync(Timestamps, Base):
    """Sync configuration and incremental state of one calendar of one connection."""

    __tablename__ = "calendar_syncs"
    __table_args__ = (UniqueConstraint("connection_id", "calendar_id"),)

    id: Mapped[int] = surrogate_key()
    connection_id: Mapped[int] = mapped_column(
        BigIntKey, ForeignKey("oauth_connections.id", ondelete="CASCADE"), index=True
    )
    calendar_id: Mapped[str] = mapped_column(String(512))  # the provider's id ("primary" for Google's)
    # Google's nextSyncToken or Graph's deltaLink (a URL), so unbounded text.
    sync_token: Mapped[str | None] = mapped_column(Text)
    direction: Mapped[str] = mapped_column(String(16), default="both")  # both, to_calendar, from_calendar
    enabled: Mapped[bool] = mapped_column(default=True)
    last_synced_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)

    connection: Mapped[OAuthConnection] = relationship()


class Contact(Timestamps, Base):
    """A contact of a user at one provider; duplicates across providers point at the survivor."""

    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("user_id", "provider", "provider_contact_id"),
        one_of("provider", PROVIDERS),
    )

    id: Mapped[int] = surrogate_key()
    user_id: Mapped[str] = user_fk(index=False)
    provider: Mapped[str] = mapped_column(String(16))
    provider_contact_id: Mapped[str] = mapped_column(String(512))
    name: Mapped[str | None] = mapped_column(Text)
    emails: Mapped[list[str]] = mapped_column(default=list)
    phones: Mapped[list[str]] = mapped_column(default=list)
    merged_into: Mapped[int | None] = mapped_column(
        BigIntKey, ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )

    user: Mapped[User] = relationship()
