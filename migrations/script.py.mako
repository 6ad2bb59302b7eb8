"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

The contract of every migration: the previous release keeps working on the upgraded schema
(add columns nullable or with a server default, backfill in batches, drop only what no
release reads any more), and each statement fits within env.py's lock and statement timeouts.
Types are spelled out with sqlalchemy's own, never imported from worker.db, so that this file
keeps meaning what it meant when the models change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
