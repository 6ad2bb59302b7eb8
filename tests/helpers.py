"""Small helpers shared by tests: waiting on conditions, reading streams."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T], timeout_s: float = 10.0, interval_s: float = 0.02, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}")
        time.sleep(interval_s)


def read_stream(client: redis.Redis, stream: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (entry.decode(), {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()})
        for entry, fields in client.xrange(stream)
    ]


def events(client: redis.Redis, prefix: str = "taskmaster") -> list[dict[str, Any]]:
    return [json.loads(fields["event"]) for _, fields in read_stream(client, f"{prefix}:events")]


def redis_values(client: redis.Redis, key: bytes) -> list[bytes]:
    """Every value held at ``key``, whatever its type (stream entries' field values)."""
    kind = client.type(key)
    if kind == b"string":
        return [client.get(key) or b""]
    if kind == b"hash":
        return [x for pair in client.hgetall(key).items() for x in pair]
    if kind == b"zset":
        return list(client.zrange(key, 0, -1))
    if kind == b"set":
        return list(client.smembers(key))
    if kind == b"list":
        return list(client.lrange(key, 0, -1))
    if kind == b"stream":
        return [v for _, fields in client.xrange(key) for v in fields.values()]
    return []


def redis_hits(client: redis.Redis, needles: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """Every key, and key of a value, holding one of ``needles`` (case-insensitive)."""
    for key in client.scan_iter(count=1000):
        for text in [key, *redis_values(client, key)]:
            decoded = text.decode(errors="replace").lower()
            if any(n.lower() in decoded for n in needles):
                yield key.decode(), decoded
