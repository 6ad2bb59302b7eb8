"""The initial schema: the durable state of the whole design.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

The contract of every migration: the previous release keeps working on the upgraded schema
(add columns nullable or with a server default, backfill in batches, drop only what no
release reads any more), and each statement fits within env.py's lock and statement timeouts.
Types are spelled out with sqlalchemy's own, never imported from worker.db, so that this file
keeps meaning what it meant when the models change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Stored in UTC: timestamptz on PostgreSQL; on SQLite the models' UTCDateTime stores naive UTC.
DATETIME_UTC = sa.DateTime(timezone=True)
# 64-bit keys on PostgreSQL; SQLite auto-increments only a column typed INTEGER.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Dependents before what they reference, the order downgrade drops them in.
TABLES = (
    "conflicts",
    "calendar_events",
    "calendar_syncs",
    "webhook_endpoints",
    "tasks",
    "push_tokens",
    "productivity_patterns",
    "preferences",
    "oauth_connections",
    "notification_log",
    "insights",
    "focus_blocks",
    "email_deliveries",
    "contacts",
    "users",
    "email_templates",
    "campaigns",
)


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("template_name", sa.String(length=128), nullable=False),
        sa.Column("template_version", sa.Integer(), nullable=True),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("started_at", DATETIME_UTC, nullable=True),
        sa.Column("finished_at", DATETIME_UTC, nullable=True),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.Column("updated_at", DATETIME_UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_index(op.f("ix_campaigns_status"), "campaigns", ["status"])

    op.create_table(
        "email_templates",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_templates")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_email_templates_name_version")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("locale", sa.String(length=35), nullable=False),
        sa.Column("erased_at", DATETIME_UTC, nullable=True),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.Column("updated_at", DATETIME_UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_index(op.f("ix_users_email"), "users", ["email"])

    op.create_table(
        "contacts",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("provider_contact_id", sa.String(length=512), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("emails", sa.JSON(), nullable=False),
        sa.Column("phones", sa.JSON(), nullable=False),
        sa.Column("merged_into", BIGINT_ID, nullable=True),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.Column("updated_at", DATETIME_UTC, nullable=False),
        sa.CheckConstraint(
            "provider IN ('google', 'microsoft', 'linkedin')", name=op.f("ck_contacts_provider")
        ),
        sa.ForeignKeyConstraint(
            ["merged_into"],
            ["contacts.id"],
            name=op.f("fk_contacts_merged_into_contacts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_contacts_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint(
            "user_id",
            "provider",
            "provider_contact_id",
            name=op.f("uq_contacts_user_id_provider_provider_contact_id"),
        ),
    )
    op.create_index(op.f("ix_contacts_merged_into"), "contacts", ["merged_into"])

    op.create_table(
        "email_deliveries",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("campaign_id", sa.String(length=128), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", DATETIME_UTC, nullable=True),
        sa.Column("delivered_at", DATETIME_UTC, nullable=True),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.Column("updated_at", DATETIME_UTC, nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'sent', 'delivered', 'bounced', 'complained', 'failed')",
            name=op.f("ck_email_deliveries_status"),
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name=op.f("fk_email_deliveries_campaign_id_campaigns"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_deliveries")),
        sa.UniqueConstraint(
            "idempotency_key", "recipient", name=op.f("uq_email_deliveries_idempotency_key_recipient")
        ),
    )
    op.create_index(op.f("ix_email_deliveries_campaign_id"), "email_deliveries", ["campaign_id"])
    op.create_index(op.f("ix_email_deliveries_message_id"), "email_deliveries", ["message_id"])
    op.create_index(
        op.f("ix_email_deliveries_provider_provider_message_id"),
        "email_deliveries",
        ["provider", "provider_message_id"],
    )
    op.create_index(op.f("ix_email_deliveries_status"), "email_deliveries", ["status"])

    op.create_table(
        "focus_blocks",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("start_at", DATETIME_UTC, nullable=False),
        sa.Column("end_at", DATETIME_UTC, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.Column("updated_at", DATETIME_UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_focus_blocks_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_focus_blocks")),
    )
    op.create_index(op.f("ix_focus_blocks_user_id_start_at"), "focus_blocks", ["user_id", "start_at"])

    op.create_table(
        "insights",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("week", sa.Date(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_insights_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_insights")),
        sa.UniqueConstraint("user_id", "week", name=op.f("uq_insights_user_id_week")),
    )
    op.create_table(
        "notification_log",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("notification_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.Column("decided_until", DATETIME_UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_notification_log_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_log")),
    )
    op.create_index(op.f("ix_notification_log_notification_id"), "notification_log", ["notification_id"])
    op.create_index(
        op.f("ix_notification_log_user_id_created_at"), "notification_log", ["user_id", "created_at"]
    )

    op.create_table(
        "oauth_connections",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("access_token", sa.LargeBinary(), nullable=False),
        sa.Column("refresh_token", sa.LargeBinary(), nullable=True),
        sa.Column("expires_at", DATETIME_UTC, nullable=True),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("refreshed_at", DATETIME_UTC, nullable=True),
        sa.Column("last_refresh_error", sa.Text(), nullable=True),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.Column("updated_at", DATETIME_UTC, nullable=False),
        sa.CheckConstraint(
            "provider IN ('google', 'microsoft', 'linkedin')", name=op.f("ck_oauth_connections_provider")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_oauth_connections_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_connections")),
        sa.UniqueConstraint("user_id", "provider", name=op.f("uq_oauth_connections_user_id_provider")),
    )
    op.create_index(op.f("ix_oauth_connections_expires_at"), "oauth_connections", ["expires_at"])
    op.create_index(op.f("ix_oauth_connections_status"), "oauth_connections", ["status"])

    op.create_table(
        "preferences",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("quiet_hours", sa.JSON(), nullable=False),
        sa.Column("caps", sa.JSON(), nullable=False),
        sa.Column("working_hours", sa.JSON(), nullable=False),
        sa.Column("focus", sa.JSON(), nullable=False),
        sa.Column("dnd_until", DATETIME_UTC, nullable=True),
        sa.Column("digest_mode", sa.String(length=16), nullable=False),
        sa.Column("digest_at", sa.Time(), nullable=True),
        sa.Column("conflict_strategy", sa.String(length=32), nullable=True),
        sa.Column("updated_at", DATETIME_UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_preferences_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_preferences")),
    )
    op.create_table(
        "productivity_patterns",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("hour", sa.SmallInteger(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("updated_at", DATETIME_UTC, nullable=False),
        sa.CheckConstraint("hour BETWEEN 0 AND 23", name=op.f("ck_productivity_patterns_hour")),
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name=op.f("ck_productivity_patterns_weekday")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_productivity_patterns_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "weekday", "hour", name=op.f("pk_productivity_patterns")),
    )
    op.create_table(
        "push_tokens",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("token", sa.String(length=512), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.Column("updated_at", DATETIME_UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_push_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_tokens")),
        sa.UniqueConstraint("token", name=op.f("uq_push_tokens_token")),
    )
    op.create_index(op.f("ix_push_tokens_user_id"), "push_tokens", ["user_id"])

    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("scheduled_at", DATETIME_UTC, nullable=True),
        sa.Column("calendar_event_id", sa.String(length=1024), nullable=True),
        sa.Column("estimated_minutes", sa.Integer(), nullable=True),
        sa.Column("priority", sa.String(length=16), nullable=True),
        sa.Column("due_at", DATETIME_UTC, nullable=True),
        sa.Column("type", sa.String(length=32), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column("completed_at", DATETIME_UTC, nullable=True),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.Column("updated_at", DATETIME_UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_tasks_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    op.create_index(op.f("ix_tasks_due_at"), "tasks", ["due_at"])
    op.create_index(op.f("ix_tasks_user_id_scheduled_at"), "tasks", ["user_id", "scheduled_at"])

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("failing_since", DATETIME_UTC, nullable=True),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.Column("updated_at", DATETIME_UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_webhook_endpoints_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index(op.f("ix_webhook_endpoints_user_id"), "webhook_endpoints", ["user_id"])

    op.create_table(
        "calendar_syncs",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("connection_id", BIGINT_ID, nullable=False),
        sa.Column("calendar_id", sa.String(length=512), nullable=False),
        sa.Column("sync_token", sa.Text(), nullable=True),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_synced_at", DATETIME_UTC, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.Column("updated_at", DATETIME_UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["oauth_connections.id"],
            name=op.f("fk_calendar_syncs_connection_id_oauth_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendar_syncs")),
        sa.UniqueConstraint(
            "connection_id", "calendar_id", name=op.f("uq_calendar_syncs_connection_id_calendar_id")
        ),
    )
    op.create_index(op.f("ix_calendar_syncs_connection_id"), "calendar_syncs", ["connection_id"])

    op.create_table(
        "calendar_events",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("sync_id", BIGINT_ID, nullable=False),
        sa.Column("provider_event_id", sa.String(length=1024), nullable=False),
        sa.Column("etag", sa.String(length=255), nullable=True),
        sa.Column("start_at", DATETIME_UTC, nullable=False),
        sa.Column("end_at", DATETIME_UTC, nullable=False),
        sa.Column("all_day", sa.Boolean(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("task_id", sa.String(length=128), nullable=True),
        sa.Column("updated_at", DATETIME_UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["sync_id"],
            ["calendar_syncs.id"],
            name=op.f("fk_calendar_events_sync_id_calendar_syncs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_calendar_events_task_id_tasks"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_calendar_events_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendar_events")),
        sa.UniqueConstraint(
            "sync_id", "provider_event_id", name=op.f("uq_calendar_events_sync_id_provider_event_id")
        ),
    )
    op.create_index(op.f("ix_calendar_events_task_id"), "calendar_events", ["task_id"])
    op.create_index(op.f("ix_calendar_events_user_id_start_at"), "calendar_events", ["user_id", "start_at"])

    op.create_table(
        "conflicts",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("task_id", sa.String(length=128), nullable=True),
        sa.Column("event_id", BIGINT_ID, nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("resolution", sa.String(length=32), nullable=True),
        sa.Column("created_at", DATETIME_UTC, nullable=False),
        sa.Column("resolved_at", DATETIME_UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["calendar_events.id"],
            name=op.f("fk_conflicts_event_id_calendar_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_conflicts_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_conflicts_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conflicts")),
    )
    op.create_index(op.f("ix_conflicts_event_id"), "conflicts", ["event_id"])
    op.create_index(op.f("ix_conflicts_task_id"), "conflicts", ["task_id"])
    op.create_index(op.f("ix_conflicts_user_id"), "conflicts", ["user_id"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table)
