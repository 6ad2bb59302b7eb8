"""One fire (worker/scheduler/firing.py): idempotency, duplicates, the running marker; the leader lock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY
from pydantic import BaseModel

from worker.registry import JobType, Registry
from worker.runtime import Runtime
from worker.scheduler.config import Entry
from worker.scheduler.firing import Firer, idempotency_key
from worker.scheduler.leader import LeaderLock
from worker.scheduler.planner import Fire
from worker.scheduler.state import SchedulerStore
from worker.scheduler.timing import Every
from worker.settings import Settings

AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Ping(BaseModel):
    target: str


def _handle(ctx: Any, data: Any) -> None:
    return None


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """A runtime on the test Redis whose registry knows one job type."""
    registry = Registry()
    registry.add(JobType(name="test.ping", model=Ping, handler=_handle, queue="bulk"))
    rt = Runtime(settings, registry)
    yield rt
    rt.close()


def entry(name: str, overlap: str = "skip") -> Entry:
    return Entry(
        name=name,
        job="test.ping",
        trigger=Every(60),
        timezone="UTC",
        data={"target": "a"},
        overlap=overlap,  # type: ignore[arg-type]
    )


def duplicates(name: str) -> float:
    return REGISTRY.get_sample_value("taskmaster_scheduler_duplicates_total", {"entry": name}) or 0.0


def test_a_fire_is_enqueued_once(runtime: Runtime, redis_client: redis.Redis) -> None:
    """The same scheduled fire twice is one job; the second counts as a duplicate and sets no marker."""
    firer = Firer(runtime, SchedulerStore(runtime.redis, runtime.keys))
    job = entry("dup")
    fire = Fire("dup", AT, AT)
    before = duplicates("dup")
    assert firer.fire(job, fire) == "enqueued"
    running = runtime.keys.schedule_running("dup")
    # The marker names the message it guards, set in the same atomic step as the enqueue.
    assert redis_client.get(running) == redis_client.lindex(runtime.keys.queue("bulk"), 0)
    redis_client.delete(running)  # the job ended
    assert firer.fire(job, fire) == "duplicate"
    assert duplicates("dup") - before == 1
    assert not redis_client.exists(running)
    assert redis_client.llen(runtime.keys.queue("bulk")) == 1
    assert redis_client.exists(runtime.keys.idempotency("fire:dup:2026-06-01T12:00:00Z"))
    message_id = redis_client.lindex(runtime.keys.queue("bulk"), 0)
    assert isinstance(message_id, bytes)
    raw = redis_client.hget(runtime.keys.queue_messages("bulk"), message_id)
    assert isinstance(raw, bytes)
    message = json.loads(raw)
    assert message["kwargs"] == {"data": {"target": "a"}}
    assert message["options"]["job"]["schedule"] == "dup"


def test_overlap_skip_and_allow(runtime: Runtime) -> None:
    """A second fire while the first run's marker exists is skipped with skip and enqueued with allow."""
    firer = Firer(runtime, SchedulerStore(runtime.redis, runtime.keys))
    later = AT.replace(minute=1)
    assert firer.fire(entry("ov"), Fire("ov", AT, AT)) == "enqueued"
    assert firer.fire(entry("ov"), Fire("ov", later, later)) == "overlap"
    assert firer.fire(entry("ov-allow", "allow"), Fire("ov-allow", AT, AT)) == "enqueued"
    assert firer.fire(entry("ov-allow", "allow"), Fire("ov-allow", later, later)) == "enqueued"


def test_idempotency_key_spelling() -> None:
    """The key names the entry and the scheduled time in UTC."""
    assert idempotency_key("sync", AT) == "fire:sync:2026-06-01T12:00:00Z"


def test_leader_lock(redis_client: redis.Redis, redis_url: str) -> None:
    """One holder at a time; renew and release only work for the holder; the TTL is set."""
    a = LeaderLock(redis_client, "t:leader", "a", 10)
    b = LeaderLock(redis_client, "t:leader", "b", 10)
    assert a.acquire() and a.held()
    assert not b.acquire() and not b.held()
    assert 9000 < redis_client.pttl("t:leader") <= 10000
    assert a.renew()
    assert not b.renew() and not b.release()
    assert a.holder() == "a"
    assert a.release() and not a.held()
    assert b.acquire() and b.holder() == "b"
    assert not a.renew()
    assert abs(a.renew_interval_s - 10 / 3) < 0.01
