"""Tasks mirrored from the host, calendar events mirrored from providers, and what planning
derives from them: conflicts, focus-time blocks, productivity patterns and weekly insights."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from worker.db.base import Base, BigIntKey, Timestamps, surrogate_key, utcnow
from worker.db.connections import CalendarSync
from worker.db.users import HOST_ID, User, user_fk


class Task(Timestamps, Base):
    """The host's task as last sent by `task.upsert`; `task.delete` removes the row."""

    __tablename__ = "tasks"
    __table_args__ = (Index(None, "user_id", "scheduled_at"),)

    id: Mapped[str] = mapped_column(HOST_ID, primary_key=True)
    user_id: Mapped[str] = user_fk(index=False)
    title: Mapped[str] = mapped_column(Text)
    scheduled_at: Mapped[datetime | None]
    # The provider event id as the host knows it; the sync's own link is CalendarEvent.task_id,
    # which also covers a task mirrored into several calendars.
    calendar_event_id: Mapped[str | None] = mapped_column(String(1024))
    estimated_minutes: Mapped[int | None]
    priority: Mapped[str | None] = mapped_column(String(16))
    due_at: Mapped[datetime | None] = mapped_column(index=True)
    type: Mapped[str | None] = mapped_column(String(32))
    tags: Mapped[list[str]] = mapped_column(default=list)
    source: Mapped[str | None] = mapped_column(String(32))
    completed_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


class CalendarEvent(Base):
    """An event of a synced calendar, as last seen at the provider or last written there."""

    __tablename__ = "calendar_events"
    __table_args__ = (
        UniqueConstraint("sync_id", "provider_event_id"),
        Index(None, "user_id", "start_at"),
    )

    id: Mapped[int] = surrogate_key()
    # Denormalised from the sync's connection so that a user's events in a time range are one
    # indexed query (conflict detection, focus planning).
    user_id: Mapped[str] = user_fk(index=False)
    sync_id: Mapped[int] = mapped_column(BigIntKey, ForeignKey("calendar_syncs.id", ondelete="CASCADE"))
    provider_event_id: Mapped[str] = mapped_column(String(1024))  # Google allows ids of 1024
    etag: Mapped[str | None] = mapped_column(String(255))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    all_day: Mapped[bool] = mapped_column(default=False)
    title: Mapped[str | None] = mapped_column(Text)
    task_id: Mapped[str | None] = mapped_column(
        HOST_ID, ForeignKey("tasks.id", ondelete="SET NULL"), index=True
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship()
    sync: Mapped[CalendarSync] = relationship()
    task: Mapped[Task | None] = relationship()


class Conflict(Base):
    """A clash between a task and an event (or two events), and how it was resolved."""

    __tablename__ = "conflicts"

    id: Mapped[int] = surrogate_key()
    user_id: Mapped[str] = user_fk()
    task_id: Mapped[str | None] = mapped_column(
        HOST_ID, ForeignKey("tasks.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[int | None] = mapped_column(
        BigIntKey, ForeignKey("calendar_events.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    resolution: Mapped[str | None] = mapped_column(String(32))  # None while open
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()
    task: Mapped[Task | None] = relationship()
    event: Mapped[CalendarEvent | None] = relationship()


class FocusBlock(Timestamps, Base):
    """A block of focus time planned for a user."""

    __tablename__ = "focus_blocks"
    __table_args__ = (Index(None, "user_id", "start_at"),)

    id: Mapped[int] = surrogate_key()
    user_id: Mapped[str] = user_fk(index=False)
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), default="planned")  # planned, confirmed, cancelled

    user: Mapped[User] = relationship()


class ProductivityPattern(Base):
    """How well a user gets work done in one hour of one weekday, learnt from completions."""

    __tablename__ = "productivity_patterns"
    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),
        CheckConstraint("hour BETWEEN 0 AND 23", name="hour"),
    )

    user_id: Mapped[str] = mapped_column(
        HOST_ID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    weekday: Mapped[int] = mapped_column(SmallInteger, primary_key=True)  # 0 is Monday, in the user's zone
    hour: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    score: Mapped[float] = mapped_column(default=0.0)
    samples: Mapped[int] = mapped_column(default=0)  # observations behind the score, to weigh new ones
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship()


class Insight(Base):
    """The weekly insights computed for a user; ``week`` is the Monday the week starts on."""

    __tablename__ = "insights"
    __table_args__ = (UniqueConstraint("user_id", "week"),)

    id: Mapped[int] = surrogate_key()
    user_id: Mapped[str] = user_fk(index=False)
    week: Mapped[date]
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship()
