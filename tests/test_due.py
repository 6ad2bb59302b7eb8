"""Jobs held by due time in Redis and released into their queues once, when due."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import redis

from tests.jobtypes import Anything
from worker.due import DueStore
from worker.keys import Keys
from worker.registry import JobType


def noop(ctx: object, data: Anything) -> None:
    """A handler that is never called here."""


HELD = JobType("test.held", Anything, noop, queue="bulk")


def test_items_wait_until_due_then_enter_their_queue(redis_client: redis.Redis) -> None:
    """Nothing is released early; once due, the message is in its queue with its due time."""
    store = DueStore(redis_client, Keys("taskmaster"))
    due = datetime(2030, 1, 1, tzinfo=UTC)
    store.put("n:1", HELD, {"key": "a"}, due, job_id="h-1")
    assert store.release_due(int(due.timestamp() * 1000) - 1) == 0
    assert store.count() == 1 and store.due_at("n:1") == due
    assert store.release_due(int(due.timestamp() * 1000)) == 1
    (message_id,) = redis_client.lrange("taskmaster:dq:bulk", 0, -1)
    message = json.loads(redis_client.hget("taskmaster:dq:bulk.msgs", message_id))
    assert message["actor_name"] == "test.held" and message["kwargs"] == {"data": {"key": "a"}}
    assert message["message_timestamp"] == int(due.timestamp() * 1000)
    assert message["options"]["job"]["id"] == "h-1"
    assert store.count() == 0


def test_same_key_replaces_and_cancel_withdraws(redis_client: redis.Redis) -> None:
    """Putting a key again moves the item; cancel removes it."""
    store = DueStore(redis_client, Keys("taskmaster"))
    now = datetime.now(UTC)
    store.put("digest:u1", HELD, {"n": 1}, now + timedelta(hours=1))
    store.put("digest:u1", HELD, {"n": 2}, now - timedelta(seconds=1))
    assert store.count() == 1
    assert store.release_due() == 1
    (message_id,) = redis_client.lrange("taskmaster:dq:bulk", 0, -1)
    assert json.loads(redis_client.hget("taskmaster:dq:bulk.msgs", message_id))["kwargs"]["data"] == {"n": 2}
    store.put("x", HELD, {}, now + timedelta(hours=1))
    assert store.cancel("x") is True and store.cancel("x") is False


def test_racing_releasers_release_each_item_once(redis_client: redis.Redis) -> None:
    """Four releasers racing over 2,000 due items put each in its queue exactly once."""
    store = DueStore(redis_client, Keys("taskmaster"))
    past = datetime.now(UTC) - timedelta(seconds=1)
    for n in range(2000):
        store.put(f"k{n}", HELD, {"n": n}, past)
    counts: list[int] = []
    threads = [threading.Thread(target=lambda: counts.append(store.release_due())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 2000
    assert redis_client.llen("taskmaster:dq:bulk") == 2000
    assert redis_client.hlen("taskmaster:dq:bulk.msgs") == 2000
