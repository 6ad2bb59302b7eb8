"""Alembic's environment: how migrations connect, within which limits, in which transaction.

`worker.db.migrate` hands over a connection already inside a transaction, so that reading the
revision before and after and the migrations themselves commit together or not at all; run
through the `alembic` command line instead, this module opens its own (URL from the
``sqlalchemy.url`` option).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from worker.db.models import Base
from worker.db.session import make_engine

# A migration waiting for a lock makes every query behind it wait too: give up early and retry
# the deploy, rather than stall the daemons. A statement that runs longer than this does too
# much at once for a schema change of a live system: split it or backfill in batches.
LOCK_TIMEOUT = "5s"
STATEMENT_TIMEOUT = "60s"

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if connection.dialect.name == "postgresql":
        # SET LOCAL: the limits end with the migration's transaction, not with the connection.
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite alters a table by copying it into a new one; batch mode does that for us.
        render_as_batch=sqlite,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    if sqlite:
        # Foreign keys were off while tables were rebuilt (see make_engine): check the result
        # before it commits.
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"migration left rows whose foreign keys point nowhere: {broken[:10]}")


def run_offline() -> None:
    """`alembic upgrade --sql`: print the SQL for a DBA instead of running it."""
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        if context.get_context().dialect.name == "postgresql":
            context.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            context.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass a connection or set the sqlalchemy.url option")
    engine = make_engine(url, foreign_keys=False)
    try:
        with engine.begin() as own_connection:
            run_migrations(own_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
