"""Delivery tracking: the suppression list and the provider events seen (for dedupe).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

The contract of every migration: the previous release keeps working on the upgraded schema
(add columns nullable or with a server default, backfill in batches, drop only what no
release reads any more), and each statement fits within env.py's lock and statement timeouts.
Types are spelled out with sqlalchemy's own, never imported from worker.db, so that this file
keeps meaning what it meant when the models change.

Two new tables and nothing else: the previous release never reads them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DATETIME_UTC = sa.DateTime(timezone=True)
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "email_suppressions",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=True),
        sa.Column("source_event_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.CheckConstraint(
            "reason IN ('bounce', 'complaint', 'manual')", name=op.f("ck_email_suppressions_reason")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_suppressions")),
        sa.UniqueConstraint("address", name=op.f("uq_email_suppressions_address")),
    )
    op.create_table(
        "email_provider_events",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("received_at", DATETIME_UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_provider_events")),
        sa.UniqueConstraint(
            "provider",
            "provider_event_id",
            name=op.f("uq_email_provider_events_provider_provider_event_id"),
        ),
    )
    op.create_index(op.f("ix_email_provider_events_received_at"), "email_provider_events", ["received_at"])


def downgrade() -> None:
    op.drop_table("email_provider_events")
    op.drop_table("email_suppressions")
