"""Migrations: upgrade, downgrade, the schema check, agreement with the models, `db upgrade`."""

from __future__ import annotations

import shutil
from pathlib import Path
from string import Template

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from worker.cli.main import main
from worker.db import migrate
from worker.db.models import Base
from worker.db.session import make_engine
from worker.errors import SchemaBehind

HEAD = "0003"

# A later release's migration, for tests only: it records the settings the migration ran
# under, which env.py is responsible for.
PROBE_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "$head"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        queries = {"lock_timeout": "SHOW lock_timeout", "statement_timeout": "SHOW statement_timeout"}
    else:
        queries = {"foreign_keys": "PRAGMA foreign_keys"}
    rows = [{"name": name, "value": str(bind.exec_driver_sql(q).scalar())} for name, q in queries.items()]
    probe = op.create_table(
        "probe", sa.Column("name", sa.Text, primary_key=True), sa.Column("value", sa.Text)
    )
    op.bulk_insert(probe, rows)


def downgrade() -> None:
    op.drop_table("probe")
"""

# A migration that fails half-way, after it created a table.
FAILING_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "$head"


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    raise RuntimeError("this migration fails")


def downgrade() -> None:
    pass
"""


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def execute(url: str, statement: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(statement)
    finally:
        engine.dispose()


def ship(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Use this release's migrations plus ``source``, as a later release would ship them."""
    copy = tmp_path / "later_migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "versions" / "9001_later.py").write_text(Template(source).substitute(head=HEAD))
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", copy)
    return "9001"


@pytest.fixture
def later_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A later release with one more migration; returns its head."""
    return ship(PROBE_REVISION, tmp_path, monkeypatch)


def test_head_revision() -> None:
    """The head is the initial revision until a later migration lands."""
    assert migrate.head_revision() == HEAD


def test_upgrade_from_empty_creates_schema(db_url: str) -> None:
    """Upgrading an empty database creates every table of the models and records the head."""
    assert migrate.upgrade(db_url) == (None, HEAD)

    assert set(Base.metadata.tables) | {"alembic_version"} == table_names(db_url)
    assert migrate.current_revision(db_url) == HEAD


def test_upgrade_twice_changes_nothing(db_url: str) -> None:
    """A second upgrade finds the database at head and leaves it there."""
    migrate.upgrade(db_url)

    assert migrate.upgrade(db_url) == (HEAD, HEAD)


def test_check_current_on_empty_database(db_url: str) -> None:
    """An empty database is behind, and the error says which command fixes it."""
    with pytest.raises(SchemaBehind, match="run `taskmaster-worker db upgrade`"):
        migrate.check_current(db_url)


def test_check_current_after_upgrade(db_url: str) -> None:
    """After an upgrade the check passes and returns the head."""
    migrate.upgrade(db_url)

    assert migrate.check_current(db_url) == HEAD


def test_check_current_on_older_database(db_url: str, later_release: str) -> None:
    """A database at this release's head is behind a later release, until upgraded by it."""
    migrate.upgrade(db_url, HEAD)

    with pytest.raises(SchemaBehind, match=f"revision {HEAD} but this release needs {later_release}"):
        migrate.check_current(db_url)
    assert migrate.upgrade(db_url) == (HEAD, later_release)
    assert migrate.check_current(db_url) == later_release


def test_check_current_accepts_newer_database(db_url: str) -> None:
    """A revision from a newer release passes: each migration keeps the previous release working."""
    migrate.upgrade(db_url)
    execute(db_url, "UPDATE alembic_version SET version_num = 'abcdef123456'")

    assert migrate.check_current(db_url) == "abcdef123456"
    assert not migrate.schema_status(db_url).behind


def test_migrations_run_within_limits(db_url: str, later_release: str) -> None:
    """PostgreSQL migrations run under lock and statement timeouts; SQLite ones with foreign keys off."""
    migrate.upgrade(db_url)

    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT name, value FROM probe")).all()
        recorded = {name: value for name, value in rows}
    finally:
        engine.dispose()
    if db_url.startswith("sqlite"):
        assert recorded == {"foreign_keys": "0"}
    else:
        assert recorded == {"lock_timeout": "5s", "statement_timeout": "1min"}


def test_failed_migration_changes_nothing(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails half-way leaves neither its tables nor a new revision behind."""
    migrate.upgrade(db_url)
    ship(FAILING_REVISION, tmp_path, monkeypatch)

    with pytest.raises(RuntimeError, match="this migration fails"):
        migrate.upgrade(db_url)

    assert migrate.current_revision(db_url) == HEAD
    assert "half_done" not in table_names(db_url)


def test_models_and_migrations_agree(db_url: str) -> None:
    """The upgraded schema matches the models: no autogenerate difference, same CHECK constraints."""
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            # Autogenerate does not compare CHECK constraints: compare their names at least.
            inspector = sa.inspect(connection)
            for table in Base.metadata.sorted_tables:
                expected = {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}
                found = {c["name"] for c in inspector.get_check_constraints(table.name)}
                assert found == expected, table.name
    finally:
        engine.dispose()


def test_comparison_notices_a_missing_column(db_url: str) -> None:
    """The agreement check is not vacuous: a model column without a migration is reported."""
    migrate.upgrade(db_url)
    metadata = sa.MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    metadata.tables["users"].append_column(sa.Column("nickname", sa.String(64)))
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        engine.dispose()

    assert [(d[0], d[2], d[3].name) for d in diff] == [("add_column", "users", "nickname")]


def test_downgrade_to_base_and_upgrade_again(db_url: str) -> None:
    """Downgrading to base drops every table; upgrading again rebuilds the schema."""
    migrate.upgrade(db_url)

    assert migrate.downgrade(db_url) == (HEAD, None)
    assert table_names(db_url) <= {"alembic_version"}
    assert migrate.upgrade(db_url) == (None, HEAD)
    assert migrate.check_current(db_url) == HEAD


def test_cli_db_upgrade(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`db upgrade` migrates TASKMASTER_DATABASE_URL to head and says from which revision to which."""
    monkeypatch.chdir(tmp_path)  # no .env of the working tree
    monkeypatch.setenv("TASKMASTER_DATABASE_URL", db_url)
    monkeypatch.setenv("TASKMASTER_DATA_DIR", str(tmp_path / "var"))

    assert main(["db", "upgrade"]) == 0
    assert f"from revision none to {HEAD}" in capsys.readouterr().out
    assert migrate.check_current(db_url) == HEAD
    assert main(["db", "current"]) == 0
    assert f"at revision {HEAD} (head)" in capsys.readouterr().out


def test_cli_db_current_when_behind(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`db current` on an empty database says it is behind and what to run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TASKMASTER_DATABASE_URL", db_url)
    monkeypatch.setenv("TASKMASTER_DATA_DIR", str(tmp_path / "var"))

    assert main(["db", "current"]) == 0
    assert (
        f"at revision none, behind head {HEAD}: run `taskmaster-worker db upgrade`" in capsys.readouterr().out
    )


def test_cli_db_upgrade_embedded_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no database URL, `db upgrade` creates the data dir and the SQLite database in it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TASKMASTER_DATABASE_URL", raising=False)
    data_dir = tmp_path / "not" / "yet" / "there"
    monkeypatch.setenv("TASKMASTER_DATA_DIR", str(data_dir))

    assert main(["db", "upgrade"]) == 0
    assert f"to {HEAD}" in capsys.readouterr().out
    assert migrate.check_current(f"sqlite:///{data_dir / 'taskmaster.db'}") == HEAD


def test_cli_db_upgrade_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable database exits with status 3 and a message without the password."""
    monkeypatch.chdir(tmp_path)
    # Port 9 (discard) on the loopback: nothing listens there, the connection is refused.
    monkeypatch.setenv("TASKMASTER_DATABASE_URL", "postgresql://worker:s3cret@127.0.0.1:9/none")

    with pytest.raises(SystemExit) as exit_info:
        main(["db", "upgrade"])

    assert exit_info.value.code == 3
    err = capsys.readouterr().err
    assert "could not be reached" in err
    assert "s3cret" not in err
