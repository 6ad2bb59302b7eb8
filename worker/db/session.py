"""Engines and sessions: one engine per process, built from ``settings.sqlalchemy_url``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

APPLICATION_NAME = "taskmaster-worker"
CONNECT_TIMEOUT_S = 10
SQLITE_BUSY_TIMEOUT_MS = 30_000
# The execution option that marks a reader's connections (``reader``).
_READ_ONLY = "taskmaster_read_only"


def database_url(url: str | URL) -> URL:
    """The URL with the driver this distribution installs (psycopg 3) when none is named.

    ``postgresql://`` would otherwise mean psycopg2, which is not a dependency, and
    ``postgres://`` (as many hosting services print it) is not accepted by SQLAlchemy at all.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str, *, foreign_keys: bool = True, pool_size: int | None = None) -> Engine:
    """An engine for ``url`` (PostgreSQL or SQLite), set up for a multi-process daemon.

    ``foreign_keys=False`` is for migrations only: SQLite rebuilds a table to alter it, and
    with enforcement on, dropping the old table would cascade to the rows that reference it.
    PostgreSQL always enforces foreign keys. ``pool_size``: the connections kept open (the
    worker's threads and its own), beyond SQLAlchemy's 5, which would make most of 16 threads
    open and close a connection for every query.
    """
    parsed = database_url(url)
    pool: dict[str, Any] = {} if pool_size is None else {"pool_size": pool_size}
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, foreign_keys, pool)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        # Fail fast when the server is unreachable, and let DBAs see who holds a connection;
        # a value given in the URL wins.
        for key, value in (("connect_timeout", CONNECT_TIMEOUT_S), ("application_name", APPLICATION_NAME)):
            if key not in parsed.query:
                connect_args[key] = value
    return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args, **pool)


def _sqlite_engine(url: URL, foreign_keys: bool, pool: dict[str, Any]) -> Engine:
    engine = create_engine(url, **pool)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The sqlite3 driver opens transactions only before DML, so DDL and reads would run
        # outside them; hand transaction control to SQLAlchemy (the "begin" hook below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        # Several worker processes share the file: WAL lets readers run beside a writer, and a
        # busy timeout makes a writer wait for the lock instead of failing at once.
        cursor.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: still never corrupt, and
        # commits cost microseconds instead of an fsync (SQLite's own advice for WAL).
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front (waiting up to the busy timeout): a deferred
        # transaction that reads then writes fails at once with SQLITE_BUSY when another
        # process wrote in between, which is the common check-then-record pattern here. A
        # reader (``reader``) never writes: it begins DEFERRED and does not queue for the lock.
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def reader(engine: Engine) -> Engine:
    """``engine`` for reads, sharing its pool: on SQLite its transactions do not take the write
    lock (WAL readers run beside the writer), so hot-path reads never queue behind writes. Not
    for writes: one would take the lock late and may fail with SQLITE_BUSY."""
    return engine.execution_options(**{_READ_ONLY: True})


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions on ``engine``; objects stay readable after commit, as jobs pass them on."""
    return sessionmaker(engine, expire_on_commit=False)
