"""The intake contract against a real Redis: validation, rejection, idempotency, claiming."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from tests.helpers import read_stream
from worker.intake import Intake
from worker.registry import load_job_modules
from worker.runtime import Runtime
from worker.settings import Settings, load_settings
from worker.streams import LINGER_S, SMALL_BATCH

GOOD = {"type": "email.send", "data": {"to": "a@example.com", "subject": "Hi", "text": "Hello"}}


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    rt = Runtime(settings, load_job_modules(settings.job_modules))
    yield rt
    rt.close()


def queued(client: redis.Redis) -> list[dict[str, object]]:
    ids = client.lrange("taskmaster:dq:default", 0, -1)
    bodies = client.hmget("taskmaster:dq:default.msgs", ids) if ids else []
    return [json.loads(body) for body in bodies]


def xadd(client: redis.Redis, value: bytes | str, field: str = "job") -> str:
    return client.xadd("taskmaster:intake", {field: value}).decode()


BAD = [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1, 2]", "must be a JSON object"),
    (
        json.dumps({"type": "no.such", "data": {}}).encode(),
        "unknown job type 'no.such'; known types: email.send, ",
    ),
    (json.dumps({"data": {}}).encode(), "type: missing"),
    (json.dumps({"type": 5, "data": {}}).encode(), "type: must be a string"),
    (json.dumps({"type": "email.send", "data": {"to": "a@example.com"}}).encode(), "data.subject: missing"),
    (
        json.dumps({"type": "email.send", "data": {"to": "nope", "subject": "s", "text": "t"}}).encode(),
        "data.to[0]: 'nope' is not a valid email address",
    ),
    (
        json.dumps(
            {"type": "email.send", "data": {"to": "a@example.com", "subject": 5, "text": "t"}}
        ).encode(),
        "data.subject: Input should be a valid string",
    ),
    (
        json.dumps(
            {"type": "email.send", "data": {"to": "a@example.com", "subject": "a\r\nBcc: x", "text": "t"}}
        ).encode(),
        "data.subject: must be a single line",
    ),
    (
        json.dumps({"type": "email.send", "data": {"to": "a@example.com", "subject": "s"}}).encode(),
        "give text, html or both",
    ),
    (json.dumps({"type": "email.send", "id": 7, "data": {}}).encode(), "id: must be a string"),
    (json.dumps({"type": "email.send", "data": [], "extra": 1}).encode(), "unknown field 'extra'"),
    (json.dumps({"type": "email.send", "data": "x"}).encode(), "data: must be a JSON object, got a string"),
    (json.dumps({**GOOD, "data": {**GOOD["data"], "text": "x" * 300_000}}).encode(), "larger than the limit"),
]


def test_every_kind_of_bad_input_is_rejected_with_a_useful_error(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    """Each bad job lands in the rejected stream naming what is wrong; good jobs around it are enqueued."""
    intake = Intake(runtime, "test-consumer")
    intake.ensure_group()
    entries = []
    for raw, _ in BAD:
        xadd(redis_client, json.dumps(GOOD))
        entries.append(xadd(redis_client, raw))
    no_job_field = xadd(redis_client, "x", field="other")
    xadd(redis_client, json.dumps(GOOD))

    while intake.poll_once(block_ms=10):
        pass

    rejected = read_stream(redis_client, "taskmaster:intake:rejected")
    assert len(rejected) == len(BAD) + 1
    by_entry = {fields["entry"]: fields for _, fields in rejected}
    for entry, (raw, expected) in zip(entries, BAD, strict=True):
        assert expected in by_entry[entry]["error"], (raw[:80], by_entry[entry]["error"])
        if b"\xff" not in raw:
            assert by_entry[entry]["job"] == raw.decode()
    assert "no field 'job'" in by_entry[no_job_field]["error"]
    assert len(queued(redis_client)) == len(BAD) + 1
    pending = redis_client.xpending("taskmaster:intake", "taskmaster-worker")
    assert pending["pending"] == 0


def test_jobs_submitted_before_the_group_existed_are_done(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    """The consumer group starts at the beginning of the stream."""
    xadd(redis_client, json.dumps(GOOD))
    intake = Intake(runtime, "late")
    intake.ensure_group()
    assert intake.poll_once(block_ms=10) == 1
    assert len(queued(redis_client)) == 1


def test_same_id_twice_is_enqueued_once_even_on_two_daemons(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Idempotency holds across intake consumers, as two daemons would run them."""
    registry = load_job_modules(settings.job_modules)
    first, second = Runtime(settings, registry), Runtime(settings, registry)
    a, b = Intake(first, "daemon-a"), Intake(second, "daemon-b")
    a.ensure_group()
    job = json.dumps({**GOOD, "id": "order-42"})
    xadd(redis_client, job)
    a.poll_once(block_ms=10)
    xadd(redis_client, job)
    b.poll_once(block_ms=10)
    messages = queued(redis_client)
    assert len(messages) == 1
    assert messages[0]["options"]["job"]["id"] == "order-42"  # type: ignore[index]
    assert redis_client.pttl("taskmaster:idem:email.send:order-42") > 6 * 86400 * 1000
    first.close()
    second.close()


def test_entries_of_a_dead_consumer_are_claimed(env: dict[str, str], redis_client: redis.Redis) -> None:
    """Entries read but never settled by a consumer that died are claimed by a live one."""
    settings = load_settings({**env, "TASKMASTER_INTAKE_CLAIM_IDLE": "0"})
    runtime = Runtime(settings, load_job_modules(settings.job_modules))
    intake = Intake(runtime, "live")
    intake.ensure_group()
    xadd(redis_client, json.dumps(GOOD))
    # A consumer reads the entry and dies before settling it.
    redis_client.xreadgroup("taskmaster-worker", "dead", {"taskmaster:intake": ">"}, count=10)
    assert intake.poll_once(block_ms=10) == 0
    assert intake.claim_stale() == 1
    assert len(queued(redis_client)) == 1
    assert redis_client.xpending("taskmaster:intake", "taskmaster-worker")["pending"] == 0
    runtime.close()


def test_queue_message_is_a_dramatiq_message_with_job_identity(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    """What intake enqueues names the actor, carries data, the host's id and the entry."""
    intake = Intake(runtime, "c")
    intake.ensure_group()
    entry = xadd(redis_client, json.dumps({**GOOD, "id": "k1"}))
    intake.poll_once(block_ms=10)
    (message,) = queued(redis_client)
    assert message["actor_name"] == "email.send"
    assert message["queue_name"] == "default"
    assert message["kwargs"]["data"]["to"] == ["a@example.com"]  # type: ignore[index]
    job = message["options"]["job"]  # type: ignore[index]
    assert job["id"] == "k1" and job["entry"] == entry
    assert job["submitted_ms"] == int(entry.split("-")[0])


def test_settled_entries_are_trimmed_pending_ones_kept(runtime: Runtime, redis_client: redis.Redis) -> None:
    """Settled entries leave the stream; entries read but unsettled, or not read yet, stay."""
    intake = Intake(runtime, "trimmer")
    intake.ensure_group()
    for _ in range(3):
        xadd(redis_client, json.dumps(GOOD))
    assert intake.poll_once(block_ms=10) == 3
    stuck = xadd(redis_client, json.dumps(GOOD))
    # Another consumer reads the fourth and has not settled it yet.
    redis_client.xreadgroup("taskmaster-worker", "slow", {"taskmaster:intake": ">"}, count=1)
    unread = xadd(redis_client, json.dumps(GOOD))
    assert intake.trim_settled() == 3
    assert [e.decode() for e, _ in redis_client.xrange("taskmaster:intake")] == [stuck, unread]
    assert intake.poll_once(block_ms=10) == 1


class _Recorded(threading.Event):
    """A stop event that notes the intake's waits; the first one stops it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        self.set()
        return True


@pytest.mark.parametrize(("jobs", "waits"), [(2, [LINGER_S]), (SMALL_BATCH, [])])
def test_a_small_batch_lingers_before_the_next_read(
    runtime: Runtime,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    jobs: int,
    waits: list[float],
) -> None:
    """After a batch of a few jobs the intake waits a moment for more, so that the next batch's
    read and script serve several; after a larger one it reads again at once."""
    for n in range(jobs):
        xadd(redis_client, json.dumps({**GOOD, "id": f"j{n}"}))
    intake = Intake(runtime, "test")
    stop = _Recorded()
    poll = intake.poll_once

    def once(block_ms: int = 1000) -> int:
        taken = poll(block_ms=block_ms)
        monkeypatch.setattr(intake, "poll_once", lambda block_ms=0: stop.set() or 0)  # then stop
        return taken

    monkeypatch.setattr(intake, "poll_once", once)
    intake.run(stop)
    assert stop.waits == waits
    assert len(queued(redis_client)) == jobs


def test_the_intake_forgets_consumers_of_processes_long_gone(
    runtime: Runtime, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    xadd(redis_client, json.dumps({**GOOD, "id": "past"}))
    past = Intake(runtime, "host-1")  # a run before this one, that settled all it took
    past.ensure_group()
    past.poll_once(block_ms=10)
    time.sleep(0.05)
    intake = Intake(runtime, "host-2")
    monkeypatch.setattr("worker.streams.FORGET_IDLE_S", 0.04)
    xadd(redis_client, json.dumps(GOOD))
    stop = _Recorded()
    intake.run(stop)
    consumers = {c["name"] for c in redis_client.xinfo_consumers("taskmaster:intake", "taskmaster-worker")}
    assert consumers == {b"host-2"}
