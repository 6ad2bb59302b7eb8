"""Connections to Redis: one client per process, built from the settings."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from worker.settings import Settings


def redis_url(settings: Settings) -> str:
    """The URL to reach Redis: the configured one, or the embedded server's socket."""
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    from worker.embedded_redis import EmbeddedRedis

    return EmbeddedRedis(settings.data_dir).url


def connect(url: str, *, decode: bool = False) -> redis.Redis:
    """A client that retries a dropped connection briefly, then raises for the caller's backoff."""
    return redis.Redis.from_url(
        url,
        decode_responses=decode,
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
