"""`taskmaster-worker db`: upgrade the database schema, or show where it stands."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from worker.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, die, settings_or_exit
from worker.settings import Settings

EPILOG = """\
examples:
  taskmaster-worker db upgrade     before starting a new release (systemd: ExecStartPre=)
  taskmaster-worker db current     which revision the database is at, and whether it is behind

The database is TASKMASTER_DATABASE_URL, or the SQLite file in TASKMASTER_DATA_DIR.

exit status:
  0  success
  1  a migration failed (the schema is left as it was)
  2  invalid configuration
  3  the database could not be reached
"""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "db",
        help="upgrade the database schema or show its revision",
        description="Manage the schema of the SQL database.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade = commands.add_parser("upgrade", help="migrate the schema to this release's head")
    upgrade.set_defaults(func=run_upgrade)
    current = commands.add_parser("current", help="print the schema's revision and whether it is behind")
    current.set_defaults(func=run_current)


def run_upgrade(args: argparse.Namespace) -> int:
    # Imported here: alembic and SQLAlchemy cost every other command a quarter second.
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from worker.db import migrate

    settings = settings_or_exit()
    _ensure_data_dir(settings)
    try:
        before, after = migrate.upgrade(settings.sqlalchemy_url)
    except (SQLAlchemyError, CommandError, RuntimeError) as exc:
        # RuntimeError: env.py's check of foreign keys after a SQLite table rebuild.
        _fail(exc)
    if before == after:
        print(f"database already at revision {after} (head)")
    else:
        print(f"database upgraded from revision {before or 'none'} to {after}")
    return EXIT_OK


def run_current(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from worker.db import migrate

    settings = settings_or_exit()
    try:
        status = migrate.schema_status(settings.sqlalchemy_url)
    except SQLAlchemyError as exc:
        _fail(exc)
    current = status.current or "none"
    if status.at_head:
        print(f"database at revision {current} (head)")
    elif status.behind:
        print(f"database at revision {current}, behind head {status.head}: {migrate.UPGRADE_HINT}")
    else:
        print(f"database at revision {current}, from a newer release (this one's head is {status.head})")
    return EXIT_OK


def _ensure_data_dir(settings: Settings) -> None:
    # SQLite creates the file but not the folder it goes in.
    if settings.embedded_database:
        settings.data_dir.mkdir(parents=True, exist_ok=True)


def _fail(exc: Exception) -> NoReturn:
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError):
        # The driver's own message, not SQLAlchemy's rendering with the statement and its
        # parameters, which may hold personal data. Drivers never put the password in it.
        first_line = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        if exc.statement is None or exc.connection_invalidated:
            die(f"the database could not be reached: {first_line}", EXIT_UNAVAILABLE)
        die(f"database error, nothing was changed: {first_line}", EXIT_FAILURE)
    die(f"migration failed, nothing was changed: {exc}", EXIT_FAILURE)
