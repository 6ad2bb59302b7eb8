"""Users as the host describes them, their push tokens and their notification preferences."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worker.db.base import Base, Timestamps, surrogate_key, utcnow

# Host ids are opaque strings (UUIDs, cuids, numbers as text): kept as given.
HOST_ID = String(128)
EMAIL = String(320)  # RFC 5321: 64 for the local part, 1 for "@", 255 for the domain


def user_fk(*, nullable: bool = False, index: bool = True) -> Mapped[Any]:
    """The owning user; erasing a user removes what belongs to them.

    Models pair it with a ``user`` relationship: besides loading, that is what makes a flush
    insert the user before the rows that point at it (a bare foreign key does not).

    ``index=False`` where a composite index or unique constraint already starts with it.
    """
    return mapped_column(HOST_ID, ForeignKey("users.id", ondelete="CASCADE"), index=index, nullable=nullable)


class User(Timestamps, Base):
    """A user of the host application, as last sent by `user.upsert`.

    `user.delete` erases personal data (email, name) and sets ``erased_at``; the row stays so
    that a late job for the user is recognised as being for an erased user, not an unknown one.
    """

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(HOST_ID, primary_key=True)
    email: Mapped[str | None] = mapped_column(EMAIL, index=True)
    name: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")  # IANA name
    locale: Mapped[str] = mapped_column(String(35), default="en")  # BCP 47; 35 is RFC 5646's minimum
    erased_at: Mapped[datetime | None]


class PushToken(Timestamps, Base):
    """A device registration for Firebase Cloud Messaging."""

    __tablename__ = "push_tokens"

    id: Mapped[int] = surrogate_key()
    user_id: Mapped[str] = user_fk()
    # Unique across users: a device that changes hands moves to its new user.
    token: Mapped[str] = mapped_column(String(512), unique=True)
    platform: Mapped[str] = mapped_column(String(16))  # android, ios, web

    user: Mapped[User] = relationship()


class Preferences(Base):
    """A user's notification and planning preferences, one row per user.

    The JSON documents are validated by `preferences.update`'s schema before they get here;
    assign a new value to change one (in-place mutation is not tracked).
    """

    __tablename__ = "preferences"

    user_id: Mapped[str] = mapped_column(
        HOST_ID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    channels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    categories: Mapped[dict[str, Any]] = mapped_column(default=dict)
    quiet_hours: Mapped[dict[str, Any]] = mapped_column(default=dict)
    caps: Mapped[dict[str, Any]] = mapped_column(default=dict)
    working_hours: Mapped[dict[str, Any]] = mapped_column(default=dict)
    focus: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dnd_until: Mapped[datetime | None]
    digest_mode: Mapped[str] = mapped_column(String(16), default="off")
    digest_at: Mapped[time | None]  # local time of day in the user's zone
    conflict_strategy: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship()
