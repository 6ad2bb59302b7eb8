"""INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite, the two databases of the daemon.

Checking for a row and then inserting it races with another worker doing the same; this is
one atomic statement instead. Whether the row is new is told by RETURNING (a row, or none):
the row count is -1 for an ORM insert on psycopg, which asks for RETURNING itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from jobs.email.tracking.errors import TrackingError
from worker.db.base import Base


def insert_new(session: Session, model: type[Base], values: Mapping[str, Any], unique: Sequence[str]) -> bool:
    """Insert one row unless one with the same ``unique`` columns exists; True when inserted."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement: Any = (
            postgresql.insert(model).values(**values).on_conflict_do_nothing(index_elements=unique)
        )
    elif dialect == "sqlite":
        statement = sqlite.insert(model).values(**values).on_conflict_do_nothing(index_elements=unique)
    else:
        raise TrackingError(f"delivery tracking supports PostgreSQL and SQLite, not {dialect}")
    key = inspect(model).primary_key
    return session.execute(statement.returning(*key)).first() is not None
