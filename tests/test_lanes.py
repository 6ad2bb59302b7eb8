"""Batch lanes (worker/lanes.py): notification.send taken many at a time from a stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from jobs.notifications import actors
from tests.helpers import events
from tests.test_notification_send import Rig, make_rig
from worker import lanes
from worker.intake import Intake
from worker.lanes import Lane
from worker.registry import JobType

LANE = "taskmaster:lane:notification.send"


@pytest.fixture
def rig(env: dict[str, str]) -> Iterator[Rig]:
    runtime = make_rig(env)
    yield Rig(runtime, actors.services(runtime))
    runtime.close()


def send_type(rig: Rig) -> JobType[Any]:
    job_type = rig.runtime.registry.get("notification.send")
    assert job_type is not None
    return job_type


def submit(client: redis.Redis, intake: Intake, *jobs: dict[str, Any]) -> None:
    for job in jobs:
        client.xadd("taskmaster:intake", {"job": json.dumps(job)})
    intake.poll_once(block_ms=10)


def notification(id: str, user: str = "u1", **data: Any) -> dict[str, Any]:
    body = {"user_id": user, "category": "task.due", "title": f"title {id}", "channels": ["email"], **data}
    return {"type": "notification.send", "id": id, "data": body}


def queued(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.hvals(f"taskmaster:dq:{queue}.msgs")]


def test_the_intake_puts_ordinary_notifications_on_the_lane_and_urgent_ones_on_their_queue(
    rig: Rig, redis_client: redis.Redis
) -> None:
    intake = Intake(rig.runtime, "test")
    intake.ensure_group()
    urgent = notification("n2", priority="urgent")
    submit(redis_client, intake, notification("n1"), urgent, notification("n1"))
    (entry,) = redis_client.xrange(LANE)
    job = json.loads(entry[1][b"job"])
    assert job["type"] == "notification.send" and job["id"] == "n1" and job["data"]["title"] == "title n1"
    assert job["entry"] and job["submitted_ms"] == int(job["entry"].split("-")[0])
    assert [m["options"]["job"]["id"] for m in queued(redis_client, "urgent")] == ["n2"]
    assert queued(redis_client, "default") == []


def test_a_batch_is_decided_reported_and_acknowledged(rig: Rig, redis_client: redis.Redis) -> None:
    rig.user("u1")
    intake = Intake(rig.runtime, "test")
    intake.ensure_group()
    submit(redis_client, intake, *(notification(f"n{n}") for n in range(5)))
    lane = Lane(rig.runtime, send_type(rig), "c1")
    lane.ensure_group()
    assert lane.poll_once(block_ms=10) == 5
    deferred = [e for e in events(redis_client) if e["type"] == "notification.deferred"]
    assert sorted(e["data"]["id"] for e in deferred) == [f"n{n}" for n in range(5)]
    assert all(e["data"]["entry"] and e["data"]["job_type"] == "notification.send" for e in deferred)
    assert redis_client.xlen(LANE) == 0
    assert redis_client.xpending(LANE, "taskmaster-worker")["pending"] == 0


def test_a_notification_for_a_user_not_known_yet_goes_to_its_queue_alone(
    rig: Rig, redis_client: redis.Redis
) -> None:
    """Dramatiq retries it there (NotReady, then notification.failed); the others are done."""
    rig.user("u1")
    intake = Intake(rig.runtime, "test")
    intake.ensure_group()
    submit(redis_client, intake, notification("n1"), notification("n2", user="later"))
    lane = Lane(rig.runtime, send_type(rig), "c1")
    lane.ensure_group()
    lane.poll_once(block_ms=10)
    (message,) = queued(redis_client, "default")
    assert message["actor_name"] == "notification.send"
    assert message["options"]["job"]["id"] == "n2" and message["options"]["job"]["entry"]
    assert message["kwargs"]["data"]["user_id"] == "later"
    assert [e["data"]["id"] for e in events(redis_client) if e["type"] == "notification.deferred"] == ["n1"]
    assert redis_client.xlen(LANE) == 0


def test_a_batch_that_fails_hands_each_job_to_its_queue(
    rig: Rig, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each then has the retries and dead letters of any job: one bad job cannot hold a lane."""

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(actors, "send_many", broken)
    rig.user("u1")
    intake = Intake(rig.runtime, "test")
    intake.ensure_group()
    submit(redis_client, intake, notification("n1"), notification("n2"))
    lane = Lane(rig.runtime, send_type(rig), "c1")
    lane.ensure_group()
    lane.poll_once(block_ms=10)
    assert sorted(m["options"]["job"]["id"] for m in queued(redis_client, "default")) == ["n1", "n2"]
    assert redis_client.xlen(LANE) == 0


def test_entries_a_dead_consumer_read_are_claimed_and_done_once(
    rig: Rig, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.user("u1")
    intake = Intake(rig.runtime, "test")
    intake.ensure_group()
    submit(redis_client, intake, notification("n1"), notification("n2"))
    dead = Lane(rig.runtime, send_type(rig), "dead")
    dead.ensure_group()
    # Given a consumer that read both entries and died before doing them
    redis_client.xreadgroup("taskmaster-worker", "dead", {LANE: ">"}, count=10)
    alive = Lane(rig.runtime, send_type(rig), "alive")
    assert alive.poll_once(block_ms=10) == 0  # not new: pending with the dead consumer
    # When they have been idle long enough
    monkeypatch.setattr(lanes, "CLAIM_IDLE_S", 0.0)
    assert alive.claim_stale() == 2
    # Then they are done once, and nothing is left pending
    deferred = [e for e in events(redis_client) if e["type"] == "notification.deferred"]
    assert sorted(e["data"]["id"] for e in deferred) == ["n1", "n2"]
    assert redis_client.xpending(LANE, "taskmaster-worker")["pending"] == 0
    assert alive.claim_stale() == 0
