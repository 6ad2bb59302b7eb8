"""Small helpers shared by tests: waiting on conditions, reading streams."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
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
