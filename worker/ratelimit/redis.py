"""The Redis backend: GCRA state in Redis, every batch decided by one Lua script (limiter.lua).

Limits hold across processes and machines because the state and the clock (Redis ``TIME``) are
both in Redis, and a script runs alone: no other decision interleaves with a batch.
Keys are ``<prefix>:rl:<caller's key>``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from importlib import resources

import redis

from worker.keys import Keys
from worker.ratelimit.base import (
    ALLOWED,
    Backend,
    Decision,
    LimiterUnavailable,
    RateLimitError,
    Request,
    Rule,
)

_SCRIPT = resources.files("worker.ratelimit").joinpath("limiter.lua").read_text()


@functools.lru_cache(maxsize=1024)
def _rule_numbers(rule: Rule) -> str:
    """A rule as the script reads it; cached, as a few rules serve every decision."""
    return f"{rule.interval_us!r} {rule.capacity_us!r}"


class RedisBackend(Backend):
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._base = f"{keys.prefix}:rl:"
        self._script = client.register_script(_SCRIPT)

    def redis_key(self, key: str) -> str:
        return self._base + key

    def decide(
        self, requests: Sequence[Request], *, commit: bool = True, book: bool = False
    ) -> list[Decision]:
        if not requests:
            return []
        redis_keys: list[str] = []
        numbers = [str(len(requests))]
        for request in requests:
            numbers += (str(request.cost), str(len(request.checks)))
            for key, rule in request.checks:
                redis_keys.append(self._base + key)
                numbers.append(_rule_numbers(rule))
        with _translated():
            mode = "2" if book else "1" if commit else "0"
            waits = self._script(keys=redis_keys, args=[mode, " ".join(numbers)])
        return [ALLOWED if wait == 0 else Decision(False, int(wait) / 1_000_000) for wait in waits]

    def ttl_s(self, key: str) -> float | None:
        with _translated():
            ttl_ms = int(self._client.pttl(self._base + key))
        return None if ttl_ms < 0 else ttl_ms / 1000

    def reset(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        with _translated():
            self._client.delete(*(self._base + key for key in keys))


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """redis-py's errors as the limiter's own, the cause chained."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise LimiterUnavailable("Redis did not answer the rate limiter") from exc
    except redis.RedisError as exc:
        raise RateLimitError(f"Redis refused a rate limit command: {exc}") from exc
