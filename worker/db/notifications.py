"""What notification records leave behind once purged or erased: anonymous daily counts."""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from worker.db.base import Base


class NotificationDailyCount(Base):
    """How many records of one kind a day had, with nothing that names a user.

    Retention and `user.delete` fold the rows they remove into these counts: ``source`` is the
    table the rows came from (``notification_log`` or ``email_deliveries``), ``decision`` the
    log's decision or the delivery's status, ``day`` the UTC day the record was created.
    """

    __tablename__ = "notification_daily_counts"

    day: Mapped[date] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    decision: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
