"""Reaching Redis from a CLI command: the configured server, or the embedded one in the data dir."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from worker.cli.common import EXIT_UNAVAILABLE, die
from worker.errors import RedisUnavailable
from worker.redis_conn import connect, redis_url
from worker.settings import Settings


@contextmanager
def redis_for_cli(settings: Settings, *, start_embedded: bool = True) -> Iterator[redis.Redis]:
    """A client; with the embedded default, start its server if no daemon runs it, stop it after."""
    started = False
    embedded = None
    if settings.embedded_redis:
        from worker.embedded_redis import EmbeddedRedis

        embedded = EmbeddedRedis(settings.data_dir)
        if not start_embedded and not embedded.alive():
            die(
                f"cannot reach the embedded Redis at {embedded.socket}: is the daemon running?",
                EXIT_UNAVAILABLE,
            )
        try:
            started = embedded.ensure_running()
        except RedisUnavailable as exc:
            die(str(exc), EXIT_UNAVAILABLE)
    client = connect(redis_url(settings))
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        die(f"cannot reach Redis: {exc}", EXIT_UNAVAILABLE)
    try:
        yield client
    finally:
        client.close()
        if started and embedded is not None:
            embedded.shutdown()
