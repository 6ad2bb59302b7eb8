"""Jobs from intake through Dramatiq workers in this process, against a real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from dramatiq import Worker

from tests.helpers import events, wait_for
from tests.jobtypes import Anything, registered
from worker.broker import build_broker
from worker.context import JobContext
from worker.errors import NotReady
from worker.intake import Intake
from worker.registry import JobType, load_job_modules
from worker.runtime import Runtime
from worker.settings import Settings, load_settings


class Harness:
    def __init__(self, settings: Settings) -> None:
        self.runtime = Runtime(settings, load_job_modules(settings.job_modules))
        self.intake = Intake(self.runtime, "test")
        self.intake.ensure_group()
        self.broker = build_broker(self.runtime)
        self.worker = Worker(self.broker, worker_threads=2, worker_timeout=50)

    def submit(self, client: redis.Redis, job: dict[str, Any]) -> str:
        entry = client.xadd("taskmaster:intake", {"job": json.dumps(job)}).decode()
        self.intake.poll_once(block_ms=10)
        return entry

    def close(self) -> None:
        self.worker.stop(timeout=5000)
        self.broker.close()
        self.runtime.close()


@pytest.fixture
def harness_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "TASKMASTER_JOB_MIN_BACKOFF": "0.05", "TASKMASTER_JOB_MAX_RETRIES": "2"}


@pytest.fixture
def harness(harness_env: dict[str, str]) -> Iterator[Harness]:
    h = Harness(load_settings(harness_env))
    h.worker.start()
    yield h
    h.close()


def test_email_send_writes_an_eml_and_reports_it(harness: Harness, redis_client: redis.Redis) -> None:
    """email.send ends as an RFC 5322 file in the outbox and an email.sent event with id and entry."""
    entry = harness.submit(
        redis_client,
        {
            "type": "email.send",
            "id": "welcome-1",
            "data": {"to": "a@example.com", "subject": "Hi", "text": "Hello"},
        },
    )
    outbox: Path = harness.runtime.settings.outbox_dir
    (path,) = wait_for(lambda: list(outbox.glob("*.eml")), what="the .eml file")
    text = path.read_text()
    assert "Subject: Hi" in text and "To: a@example.com" in text and "Hello" in text
    assert "From: taskmaster-worker@example.com" in text
    (event,) = wait_for(lambda: [e for e in events(redis_client) if e["type"] == "email.sent"])
    assert event["data"]["id"] == "welcome-1" and event["data"]["entry"] == entry
    assert event["data"]["provider"] == "outbox"


def test_a_failing_job_ends_in_the_dead_letters_with_an_event(
    harness_env: dict[str, str], redis_client: redis.Redis
) -> None:
    """After its retries a failing job is dead-lettered and reported as job.dead."""

    def fail(ctx: JobContext, data: Anything) -> None:
        raise RuntimeError("provider said no, token=abcdef123456")

    with registered(JobType("test.fail", Anything, fail)):
        h = Harness(load_settings(harness_env))
        h.worker.start()
        try:
            entry = h.submit(redis_client, {"type": "test.fail", "id": "f1", "data": {}})
            dead = wait_for(
                lambda: [e for e in events(redis_client) if e["type"] == "job.dead"], timeout_s=15
            )
        finally:
            h.close()
    data = dead[0]["data"]
    assert data["job_type"] == "test.fail" and data["id"] == "f1" and data["entry"] == entry
    assert "RuntimeError: provider said no" in data["error"]
    assert "abcdef123456" not in data["error"]
    assert redis_client.zcard("taskmaster:dq:default.XQ") == 1


def test_not_ready_is_retried_until_it_is(harness_env: dict[str, str], redis_client: redis.Redis) -> None:
    """A job whose prerequisite is not there yet is retried, beyond the failure retry count."""
    attempts: list[int] = []

    def needs_user(ctx: JobContext, data: Anything) -> None:
        attempts.append(ctx.retries)
        if len(attempts) < 5:
            raise NotReady("user u1 is not known yet")

    with registered(JobType("test.needs_user", Anything, needs_user)):
        h = Harness(load_settings({**harness_env, "TASKMASTER_JOB_MIN_BACKOFF": "0.01"}))
        h.worker.start()
        try:
            h.submit(redis_client, {"type": "test.needs_user", "data": {}})
            wait_for(lambda: len(attempts) >= 5, timeout_s=20, what="five attempts")
            h.worker.join()
        finally:
            h.close()
    assert attempts == [0, 1, 2, 3, 4]
    assert not [e for e in events(redis_client) if e["type"] == "job.dead"]


def test_not_ready_past_its_age_fails_with_an_event(
    harness_env: dict[str, str], redis_client: redis.Redis
) -> None:
    """A prerequisite that never comes ends the job in the dead letters with job.dead."""

    def never(ctx: JobContext, data: Anything) -> None:
        raise NotReady("user u2 is not known yet")

    settings = load_settings(
        {**harness_env, "TASKMASTER_NOT_READY_MAX_AGE": "0.3", "TASKMASTER_JOB_MIN_BACKOFF": "0.05"}
    )
    with registered(JobType("test.never", Anything, never)):
        h = Harness(settings)
        h.worker.start()
        try:
            h.submit(redis_client, {"type": "test.never", "data": {}})
            dead = wait_for(
                lambda: [e for e in events(redis_client) if e["type"] == "job.dead"], timeout_s=15
            )
        finally:
            h.close()
    assert "user u2 is not known yet" in dead[0]["data"]["error"]
    assert "still not ready" in dead[0]["data"]["error"]


def test_urgent_jobs_do_not_wait_behind_bulk_work(
    harness_env: dict[str, str], redis_client: redis.Redis
) -> None:
    """With the one thread busy on a backlog of bulk jobs, an urgent job runs next, not last."""
    import time

    order: list[str] = []

    def bulky(ctx: JobContext, data: Anything) -> None:
        order.append(f"bulk-{data.n}")
        time.sleep(0.02)

    def urgent(ctx: JobContext, data: Anything) -> None:
        order.append("urgent")

    with registered(
        JobType("test.bulky", Anything, bulky, queue="bulk"),
        JobType("test.urgent", Anything, urgent, queue="urgent"),
    ):
        h = Harness(load_settings(harness_env))
        h.worker = Worker(h.broker, worker_threads=1, worker_timeout=20)
        for n in range(30):
            redis_client.xadd(
                "taskmaster:intake", {"job": json.dumps({"type": "test.bulky", "data": {"n": n}})}
            )
        h.intake.poll_once(block_ms=10)
        h.worker.start()
        try:
            wait_for(lambda: len(order) >= 3, what="the backlog to start")
            h.submit(redis_client, {"type": "test.urgent", "data": {}})
            wait_for(lambda: "urgent" in order, what="the urgent job")
        finally:
            h.close()
    assert order.index("urgent") <= 8, order


def test_python_client_submits_the_contract_envelope(redis_client: redis.Redis, redis_url: str) -> None:
    """Client.submit and submit_many XADD the envelope of the contract and return entry ids."""
    from worker.client import Client

    with Client(redis_url) as client:
        entry = client.submit("email.send", {"to": "a@example.com"}, id="x1")
        more = client.submit_many([("email.send", {"to": "b@example.com"}, None)])
    entries = redis_client.xrange("taskmaster:intake")
    assert [e.decode() for e, _ in entries] == [entry, *more]
    assert json.loads(entries[0][1][b"job"]) == {
        "type": "email.send",
        "data": {"to": "a@example.com"},
        "id": "x1",
    }
    assert json.loads(entries[1][1][b"job"]) == {"type": "email.send", "data": {"to": "b@example.com"}}


def test_send_at_holds_the_email_in_redis_until_due(harness: Harness, redis_client: redis.Redis) -> None:
    """An email with a future send_at waits in the due-time store, then is sent once, as itself."""
    from datetime import UTC, datetime, timedelta

    from worker.due import DueStore

    send_at = datetime.now(UTC) + timedelta(hours=2)
    entry = harness.submit(
        redis_client,
        {
            "type": "email.send",
            "id": "later-1",
            "data": {"to": "a@example.com", "subject": "Later", "text": "x", "send_at": send_at.isoformat()},
        },
    )
    wait_for(lambda: [e for e in events(redis_client) if e["type"] == "email.scheduled"], what="the hold")
    store = DueStore(redis_client, harness.runtime.keys)
    assert store.count() == 1
    outbox: Path = harness.runtime.settings.outbox_dir
    assert not list(outbox.glob("*.eml"))
    assert store.release_due(int((send_at + timedelta(seconds=1)).timestamp() * 1000)) == 1
    (path,) = wait_for(lambda: list(outbox.glob("*.eml")), what="the email at its time")
    assert "Subject: Later" in path.read_text()
    (sent,) = wait_for(lambda: [e for e in events(redis_client) if e["type"] == "email.sent"])
    assert sent["data"]["id"] == "later-1" and sent["data"]["entry"] == entry


def test_the_outbox_skips_suppressed_recipients(harness: Harness, redis_client: redis.Redis) -> None:
    """With the outbox provider too, a suppressed address gets no email and the others do."""
    harness.submit(redis_client, {"type": "suppression.add", "data": {"address": "gone@example.com"}})
    wait_for(lambda: [e for e in events(redis_client) if e["type"] == "suppression.added"])
    data = {"to": ["gone@example.com", "here@example.com"], "subject": "Hi", "text": "x"}
    harness.submit(redis_client, {"type": "email.send", "id": "s-1", "data": data})
    (suppressed,) = wait_for(lambda: [e for e in events(redis_client) if e["type"] == "email.suppressed"])
    assert suppressed["data"]["to"] == ["gone@example.com"]
    outbox: Path = harness.runtime.settings.outbox_dir
    (path,) = wait_for(lambda: list(outbox.glob("*.eml")), what="the email to the other recipient")
    assert "here@example.com" in path.read_text() and "gone@example.com" not in path.read_text()
