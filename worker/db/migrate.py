"""Moving the schema to this release's head, and telling whether a database is behind it.

Alembic is configured here in code (``script_location`` is the installed ``migrations``
package), so an installed daemon needs no alembic.ini and no working directory of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection

import migrations
from worker.db.session import database_url, make_engine
from worker.errors import SchemaBehind

MIGRATIONS_DIR = Path(migrations.__file__).parent
UPGRADE_HINT = "run `taskmaster-worker db upgrade`"


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands against this release's migrations."""

    current: str | None  # None: no schema yet
    head: str
    known: bool  # False: a revision this release does not have, so from a newer release

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def behind(self) -> bool:
        return self.known and not self.at_head


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration; with ``connection``, migrations run on it, in its transaction."""
    config = Config()
    # Config options go through configparser interpolation, where "%" is special.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision this release's models correspond to."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(url: str) -> str | None:
    """The database's revision; None when it has no schema (or, for SQLite, no file) yet."""
    if _sqlite_file_missing(url):
        # Reading must not create an empty database file as a side effect.
        return None
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return _revision_of(connection)
    finally:
        engine.dispose()


def schema_status(url: str) -> SchemaStatus:
    """The database's revision against this release's head, for `db current` and the check."""
    current = current_revision(url)
    script = ScriptDirectory.from_config(alembic_config())
    return SchemaStatus(current=current, head=head_revision(), known=_is_known(script, current))


def check_current(url: str) -> str | None:
    """Return the database's revision, or raise SchemaBehind when this release needs a newer one.

    A revision this release does not know passes: it comes from a newer release, and every
    migration keeps the previous release working (see script.py.mako).
    """
    status = schema_status(url)
    if status.behind:
        shown = status.current or "none (empty database)"
        raise SchemaBehind(
            f"the database schema is at revision {shown} but this release needs {status.head}: {UPGRADE_HINT}"
        )
    return status.current


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the database up to ``revision``; return its revision before and after.

    Everything runs in one transaction: a failed migration leaves the schema as it was.
    """
    with _migration_connection(url) as connection:
        before = _revision_of(connection)
        command.upgrade(alembic_config(connection), revision)
        return before, _revision_of(connection)


def downgrade(url: str, revision: str = "base") -> tuple[str | None, str | None]:
    """Migrate the database down to ``revision`` ("base" drops every table); before and after."""
    with _migration_connection(url) as connection:
        before = _revision_of(connection)
        command.downgrade(alembic_config(connection), revision)
        return before, _revision_of(connection)


@contextmanager
def _migration_connection(url: str) -> Iterator[Connection]:
    engine = make_engine(url, foreign_keys=False)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        engine.dispose()


def _revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _is_known(script: ScriptDirectory, revision: str | None) -> bool:
    if revision is None:
        return True
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def _sqlite_file_missing(url: str) -> bool:
    parsed = database_url(url)
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or parsed.query.get("uri"):
        return False
    return not Path(database).exists()
