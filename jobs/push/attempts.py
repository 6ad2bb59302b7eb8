"""What each device got from one `push.send` job, in Redis, so a retry sends to no device twice.

One key per (job idempotency key, device): ``<prefix>:push:attempt:<job key>:<device>``.

- Before the call, ``SET NX`` a lease (``pending``) that expires after ``lease_s``, longer than
  one attempt can take. Only the holder calls FCM for that device.
- After the call, the outcome replaces it (``sent``, ``unregistered``, ``rejected:<code>``),
  kept TASKMASTER_IDEMPOTENCY_TTL, in the same transaction as the event that reports it.
- A transient failure deletes the lease, so the job's retry sends again.

A worker killed during the call leaves the lease: a retry waits for it to expire and then
sends, so a device gets a message at least once, and twice only if the kill fell between
FCM accepting it and the outcome being recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from worker.errors import RedisUnavailable

PENDING = "pending"


@contextmanager
def redis_errors(doing: str) -> Iterator[None]:
    """Translate redis-py's errors; the job is retried (the attempt record is its memory)."""
    try:
        yield
    except redis.RedisError as exc:
        raise RedisUnavailable(f"{doing}: {type(exc).__name__}") from exc


def device_id(token: str) -> str:
    """A short, stable name for a registration token, for keys, events and logs."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class Attempts:
    def __init__(self, client: redis.Redis, prefix: str, job_key: str, *, lease_s: float, ttl_s: float):
        self._client = client
        self._base = f"{prefix}:push:attempt:{job_key}"
        self._lease_ms = max(1, int(lease_s * 1000))
        self._ttl_ms = max(1, int(ttl_s * 1000))

    def key(self, device: str) -> str:
        return f"{self._base}:{device}"

    def begin(self, device: str) -> str | None:
        """Take the lease and return None, or return what is recorded: ``pending`` or an outcome."""
        key = self.key(device)
        with redis_errors("recording a push attempt"):
            for _ in range(2):
                if self._client.set(key, PENDING, nx=True, px=self._lease_ms):
                    return None
                value = self._client.get(key)
                if value is not None:
                    return value.decode() if isinstance(value, bytes) else str(value)
                # The lease expired between SET and GET: try to take it once more.
        return PENDING

    def lease_left_s(self, device: str) -> float:
        """How long until a lease held by another attempt expires (at least a second)."""
        with redis_errors("reading a push attempt"):
            left_ms = int(self._client.pttl(self.key(device)))
        return max(1.0, left_ms / 1000)

    def finish(self, pipe: Any, device: str, outcome: str) -> None:
        """Record the outcome on ``pipe`` (a transaction that also carries its event)."""
        pipe.set(self.key(device), outcome, px=self._ttl_ms)

    def abandon(self, device: str) -> None:
        """Give the lease back after a transient failure, so a retry sends again."""
        with redis_errors("releasing a push attempt"):
            self._client.delete(self.key(device))
