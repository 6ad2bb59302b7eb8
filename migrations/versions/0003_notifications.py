"""Notifications: the anonymous daily counts that retention and erasure leave behind.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

The contract of every migration: the previous release keeps working on the upgraded schema.
One new table and nothing else: the previous release never reads it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_daily_counts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "source", "channel", "decision", name=op.f("pk_notification_daily_counts")
        ),
    )


def downgrade() -> None:
    op.drop_table("notification_daily_counts")
