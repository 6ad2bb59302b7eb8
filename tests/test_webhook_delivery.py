"""Webhook endpoints and deliveries against a real Redis, a real database and a local receiver.

Attempts are driven by hand with a controllable clock: the first ones are taken off the queue
and run at a chosen time, later ones are released from the due-time store at their due time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from dramatiq import Worker
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from jobs.webhooks import client, enqueue_delivery
from jobs.webhooks.actors import delete_endpoint, upsert_endpoint
from jobs.webhooks.delivery import Outcome, attempt_delivery, next_delay_s
from jobs.webhooks.keys import WebhookKeys
from jobs.webhooks.models import EndpointDelete, EndpointUpsert, WebhookDeliver
from jobs.webhooks.signing import webhook_id_for
from jobs.webhooks.store import endpoint_store
from jobs.webhooks.targets import AddressGuard
from tests.fakes.webhook_receiver import Reply, WebhookReceiver
from tests.helpers import events, redis_hits, wait_for
from tests.test_webhook_signing import Unverified, new_secret, verify
from worker.broker import build_broker
from worker.context import JobContext
from worker.crypto import SecretBox
from worker.db.migrate import upgrade
from worker.db.models import User, WebhookEndpoint
from worker.due import DueStore, run_releaser
from worker.errors import NotReady
from worker.events import JobRef
from worker.intake import Intake
from worker.registry import load_job_modules
from worker.runtime import Runtime
from worker.settings import load_settings


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class World:
    """A runtime on the test Redis and a migrated database, with hands to drive deliveries."""

    def __init__(self, env: dict[str, str]) -> None:
        settings = load_settings(env)
        self.runtime = Runtime(settings, load_job_modules(settings.job_modules))
        self.store = endpoint_store(self.runtime)
        self.due = DueStore(self.runtime.redis, self.runtime.keys)

    def ctx(self, job_type: str) -> JobContext:
        return JobContext(self.runtime, JobRef(job_type, None, None), int(time.time() * 1000), 0, "test")

    def upsert(self, **data: Any) -> None:
        upsert_endpoint(self.ctx("webhook.endpoint.upsert"), EndpointUpsert.model_validate(data))

    def add_users(self, *user_ids: str) -> None:
        with Session(self.runtime.db) as session, session.begin():
            session.add_all(User(id=user_id) for user_id in user_ids)

    def row(self, endpoint_id: str) -> WebhookEndpoint | None:
        with Session(self.runtime.db) as session:
            return session.get(WebhookEndpoint, endpoint_id)

    def take_queued(self) -> list[tuple[WebhookDeliver, JobRef]]:
        """Take the deliveries waiting in the default queue off it, without running them."""
        r, keys = self.runtime.redis, self.runtime.keys
        taken = []
        while (message_id := r.lpop(keys.queue("default"))) is not None:
            message = json.loads(r.hget(keys.queue_messages("default"), message_id))
            r.hdel(keys.queue_messages("default"), message_id)
            job = message["options"]["job"]
            ref = JobRef(job["type"], job["id"], job["entry"])
            taken.append((WebhookDeliver.model_validate(message["kwargs"]["data"]), ref))
        return taken

    def run_queued(self, now: datetime) -> list[Outcome]:
        return [attempt_delivery(self.runtime, data, now=now, job=ref) for data, ref in self.take_queued()]

    def release(self, now: datetime) -> list[Outcome]:
        """Release what the due-time store holds by ``now`` and run it at ``now``."""
        self.due.release_due(ms(now))
        return self.run_queued(now)

    def next_due(self, endpoint_id: str, webhook_id: str, attempt: int) -> datetime:
        due = self.due.due_at(WebhookKeys.retry_item(endpoint_id, webhook_id, attempt))
        assert due is not None, f"attempt {attempt} is not scheduled"
        return due

    def events(self, event_type: str) -> list[dict[str, Any]]:
        return [e["data"] for e in events(self.runtime.redis) if e["type"] == event_type]

    def notify(self, message_id: str = "n-1", **kw: Any) -> int:
        args: dict[str, Any] = {"user_id": None, "category": None, "event_type": "task.due"}
        args.update(kw)
        return enqueue_delivery(self.runtime, payload={"task": "t1"}, message_id=message_id, **args)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


MakeWorld = Callable[..., World]


def _world_factory(env: dict[str, str], url: str) -> Iterator[MakeWorld]:
    upgrade(url)
    worlds: list[World] = []

    def make(**overrides: str) -> World:
        base = {
            **env,
            "TASKMASTER_DATABASE_URL": url,
            "TASKMASTER_JOB_MODULES": "jobs.webhooks",
            "TASKMASTER_WEBHOOK_ALLOW_PRIVATE": "true",
            "TASKMASTER_WEBHOOK_TIMEOUT": "5s",
        }
        worlds.append(World({**base, **{f"TASKMASTER_{k.upper()}": v for k, v in overrides.items()}}))
        return worlds[-1]

    yield make
    for world in worlds:
        world.runtime.close()


@pytest.fixture
def make_world(env: dict[str, str], tmp_path: Any) -> Iterator[MakeWorld]:
    """Worlds on SQLite: for delivery behaviour, which does not depend on the database."""
    yield from _world_factory(env, f"sqlite:///{tmp_path / 'webhooks.db'}")


@pytest.fixture
def make_world_db(env: dict[str, str], db_url: str) -> Iterator[MakeWorld]:
    """Worlds on SQLite and on PostgreSQL: for what the database does."""
    yield from _world_factory(env, db_url)


SECRET = new_secret()
WID = webhook_id_for("n-1")


def test_upsert_stores_the_secret_encrypted_and_delete_removes(make_world_db: MakeWorld) -> None:
    """An endpoint is stored with its secret encrypted, replaced by a second upsert, then deleted."""
    w = make_world_db()
    w.add_users("u1")
    w.upsert(endpoint_id="e1", url="https://a.example/h", secret=SECRET, user_id="u1", categories=["tasks"])
    row = w.row("e1")
    assert row is not None and row.enabled and row.user_id == "u1" and row.categories == ["tasks"]
    assert SECRET.encode() not in row.secret and SECRET[6:].encode() not in row.secret
    assert SecretBox.from_settings(w.runtime.settings).decrypt(row.secret) == SECRET
    w.upsert(endpoint_id="e1", url="https://b.example/h", secret=SECRET)
    row = w.row("e1")
    assert row is not None and (row.url, row.user_id, row.categories) == ("https://b.example/h", None, [])
    delete_endpoint(w.ctx("webhook.endpoint.delete"), EndpointDelete(endpoint_id="e1"))
    assert w.row("e1") is None
    delete_endpoint(w.ctx("webhook.endpoint.delete"), EndpointDelete(endpoint_id="e1"))  # idempotent


def test_an_endpoint_of_an_unknown_user_waits_for_the_user(make_world_db: MakeWorld) -> None:
    """Upserting for a user not yet known raises NotReady; once the user exists it goes through."""
    w = make_world_db()
    with pytest.raises(NotReady, match="u9"):
        w.upsert(endpoint_id="e1", url="https://a.example/h", secret=SECRET, user_id="u9")
    w.add_users("u9")
    w.upsert(endpoint_id="e1", url="https://a.example/h", secret=SECRET, user_id="u9")
    assert w.row("e1") is not None


def test_enqueue_delivery_routes_by_user_and_category(make_world_db: MakeWorld) -> None:
    """Endpoints without a user get every user's events; without categories, every category."""
    w = make_world_db()
    w.add_users("u1", "u2")
    for endpoint_id, user_id, categories in [
        ("all", None, []),
        ("all-billing", None, ["billing"]),
        ("u1", "u1", []),
        ("u1-tasks", "u1", ["tasks"]),
        ("u2", "u2", []),
        ("off", None, []),
    ]:
        w.upsert(
            endpoint_id=endpoint_id,
            url="https://a.example/h",
            secret=SECRET,
            user_id=user_id,
            categories=categories,
        )
    assert w.store.disable("off")
    cases = [
        (("u1", "billing"), {"all", "all-billing", "u1"}),
        (("u1", "tasks"), {"all", "u1", "u1-tasks"}),
        (("u2", None), {"all", "u2"}),
        ((None, "billing"), {"all", "all-billing"}),
    ]
    for n, ((user_id, category), expected) in enumerate(cases):
        assert w.notify(f"m{n}", user_id=user_id, category=category) == len(expected)
        queued = w.take_queued()
        assert {data.endpoint_id for data, _ in queued} == expected
        assert {data.webhook_id for data, _ in queued} == {webhook_id_for(f"m{n}")}
    # The same notification again (a retried job) enqueues nothing new.
    assert w.notify("m0", user_id="u1", category="billing") == 3
    assert w.take_queued() == []


def test_a_delivery_is_a_signed_json_post_reported_once(
    make_world: MakeWorld, receiver: WebhookReceiver
) -> None:
    """A 2xx ends the delivery with webhook.delivered; the POST verifies by the spec; no resend."""
    w = make_world()
    with capture_logs() as logs:
        w.upsert(endpoint_id="e1", url=receiver.url(), secret=SECRET)
        assert w.notify(event_type="task.due") == 1
        ((data, ref),) = w.take_queued()
        now = datetime.now(UTC)
        assert attempt_delivery(w.runtime, data, now=now, job=ref) == "delivered"
    assert [entry["event"] for entry in logs] == ["webhook.endpoint_upserted", "webhook.attempt"]
    assert SECRET[6:] not in repr(logs) + repr(events(w.runtime.redis))
    (got,) = receiver.received
    verify(SECRET, got.headers, got.body)
    assert got.headers["webhook-id"] == WID and got.headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert got.headers["content-type"] == "application/json"
    body = json.loads(got.body)
    assert body["type"] == "task.due" and body["data"] == {"task": "t1"} and body["timestamp"].endswith("Z")
    (event,) = w.events("webhook.delivered")
    expected = {"endpoint_id": "e1", "webhook_id": WID, "message_id": "n-1", "event_type": "task.due"}
    assert {key: event[key] for key in expected} == expected
    assert event["attempts"] == 1 and event["status"] == 200 and event["job_type"] == "webhook.deliver"
    # The same job redelivered (a worker died after the POST) does not POST again.
    assert attempt_delivery(w.runtime, data, now=now, job=ref) == "skipped"
    assert len(receiver.received) == 1


@pytest.mark.parametrize(
    ("attempt", "retry_after_s", "expected"),
    [
        (1, None, 5.0),
        (2, None, 120.0),
        (3, None, 600.0),
        (2, 300.0, 300.0),  # Retry-After lengthens a wait...
        (2, 1.0, 120.0),  # ...never shortens it...
        (1, 10**9, 600.0),  # ...and never past the schedule's longest delay
        (4, None, None),  # the last attempt of three retries
    ],
)
def test_the_retry_schedule(attempt: int, retry_after_s: float | None, expected: float | None) -> None:
    """Delays follow TASKMASTER_WEBHOOK_RETRY_SCHEDULE, stretched by a receiver's Retry-After."""
    assert next_delay_s([5.0, 120.0, 600.0], attempt, retry_after_s) == expected


def test_a_500_is_retried_from_the_due_store_with_the_same_id_signed_anew(
    make_world: MakeWorld, receiver: WebhookReceiver, redis_client: redis.Redis
) -> None:
    """500 then 200: the retry waits in the due-time store, keeps webhook-id, re-signs with a new time."""
    w = make_world()
    w.upsert(endpoint_id="e1", url=receiver.url(), secret=SECRET)
    receiver.script(Reply(500))
    w.notify()
    t0 = datetime.now(UTC)
    assert w.run_queued(t0) == ["retrying"]
    row = w.row("e1")
    assert row is not None and row.failing_since is not None
    due = w.next_due("e1", WID, 2)
    assert t0 + timedelta(seconds=5) <= due <= t0 + timedelta(seconds=5.5)  # 5 s and its jitter
    # Held in Redis by due time: nothing in a queue, no Dramatiq delayed message.
    assert redis_client.llen("taskmaster:dq:default") == 0
    assert redis_client.llen("taskmaster:dq:default.DQ") == 0 and w.due.count() == 1
    assert w.release(due - timedelta(milliseconds=1)) == []
    assert w.release(due) == ["delivered"]
    first, second = receiver.received
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == WID
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    verify(SECRET, first.headers, first.body, now_s=t0.timestamp())
    verify(SECRET, second.headers, second.body, now_s=due.timestamp())
    (event,) = w.events("webhook.delivered")
    assert event["attempts"] == 2 and event["status"] == 200
    row = w.row("e1")
    assert row is not None and row.failing_since is None


def test_a_receiver_that_does_not_answer_in_time_fails_the_attempt(
    make_world: MakeWorld, receiver: WebhookReceiver
) -> None:
    """A receiver holding the request past TASKMASTER_WEBHOOK_TIMEOUT is a failed attempt."""
    w = make_world(webhook_timeout="0.3", webhook_retry_schedule="")
    w.upsert(endpoint_id="e1", url=receiver.url(), secret=SECRET)
    receiver.script(Reply(hold=threading.Event()))
    w.notify()
    assert w.run_queued(datetime.now(UTC)) == ["failed"]
    (event,) = w.events("webhook.failed")
    assert event["error"] == "timed out" and event["status"] is None
    assert event["reason"] == "attempts_exhausted" and event["attempts"] == 1


def test_a_receiver_dripping_its_answer_is_cut_at_the_deadline(receiver: WebhookReceiver) -> None:
    """Bytes arriving just often enough to beat a per-read timeout still end at the attempt's deadline."""
    receiver.script(Reply(200, body=b"x" * 1000, drip_s=0.02))
    result = client.post(
        receiver.url(),
        b"{}",
        {},
        guard=AddressGuard(allow_private=True),
        timeout_s=0.3,
        max_response_bytes=10,
    )
    assert result.timed_out and result.error == "timed out" and not result.ok


def test_a_redirect_is_not_followed(make_world: MakeWorld, receiver: WebhookReceiver) -> None:
    """A 302 is a failure: the Location is never requested."""
    w = make_world(webhook_retry_schedule="")
    w.upsert(endpoint_id="e1", url=receiver.url(), secret=SECRET)
    receiver.script(Reply(302, headers={"Location": receiver.url("/elsewhere")}))
    w.notify()
    assert w.run_queued(datetime.now(UTC)) == ["failed"]
    assert receiver.paths() == ["/hook"]
    (event,) = w.events("webhook.failed")
    assert event["status"] == 302 and "redirects are not followed" in event["error"]


def test_an_oversized_response_is_read_up_to_the_cap_only(
    make_world: MakeWorld, receiver: WebhookReceiver
) -> None:
    """A 32 MiB answer: 1 KiB is read, the rest never taken; the delivery still succeeds."""
    big = Reply(200, body=b"x" * 65536, repeat=512)
    receiver.script(big)
    result = client.post(
        receiver.url(),
        b"{}",
        {},
        guard=AddressGuard(allow_private=True),
        timeout_s=5,
        max_response_bytes=1024,
    )
    assert result.ok and result.body == b"x" * 1024 and result.truncated
    wait_for(lambda: receiver.write_failures == 1, what="the receiver to see the hang-up")
    w = make_world(webhook_max_response_bytes="1024")
    w.upsert(endpoint_id="e1", url=receiver.url(), secret=SECRET)
    receiver.script(big)
    w.notify()
    assert w.run_queued(datetime.now(UTC)) == ["delivered"]
    wait_for(lambda: receiver.write_failures == 2, what="the receiver to see the second hang-up")


def test_an_endpoint_failing_longer_than_the_limit_is_disabled(
    make_world_db: MakeWorld, receiver: WebhookReceiver
) -> None:
    """Failing past TASKMASTER_WEBHOOK_DISABLE_AFTER disables the endpoint; an upsert enables it."""
    w = make_world_db(webhook_disable_after="10s", webhook_retry_schedule="5s,30s,2m")
    w.upsert(endpoint_id="e1", url=receiver.url(), secret=SECRET)
    receiver.script(*[Reply(500)] * 3)
    w.notify()
    t0 = datetime.now(UTC)
    assert w.run_queued(t0) == ["retrying"]
    assert w.release(w.next_due("e1", WID, 2)) == ["retrying"]  # failing ~5 s: not yet
    assert w.release(w.next_due("e1", WID, 3)) == ["failed"]  # failing ~35 s: disabled
    assert len(receiver.received) == 3 and w.due.count() == 0
    (disabled,) = w.events("webhook.endpoint.disabled")
    assert disabled["endpoint_id"] == "e1" and "DISABLE_AFTER" in disabled["reason"]
    (failed,) = w.events("webhook.failed")
    assert failed["reason"] == "endpoint_disabled" and failed["attempts"] == 3 and failed["status"] == 500
    row = w.row("e1")
    assert row is not None and not row.enabled and row.failing_since is not None
    assert w.notify("n-2") == 0
    w.upsert(endpoint_id="e1", url=receiver.url(), secret=SECRET)
    row = w.row("e1")
    assert row is not None and row.enabled and row.failing_since is None
    assert w.notify("n-3") == 1


def test_410_gone_disables_the_endpoint_at_once(make_world: MakeWorld, receiver: WebhookReceiver) -> None:
    """The spec's 410 Gone: the endpoint is disabled and the delivery not retried."""
    w = make_world()
    w.upsert(endpoint_id="e1", url=receiver.url(), secret=SECRET)
    receiver.script(Reply(410))
    w.notify()
    assert w.run_queued(datetime.now(UTC)) == ["failed"]
    assert w.due.count() == 0 and "410" in w.events("webhook.endpoint.disabled")[0]["reason"]
    assert w.events("webhook.failed")[0]["reason"] == "endpoint_gone"


def test_a_rotated_secret_signs_with_old_and_new_for_a_day(
    make_world: MakeWorld, receiver: WebhookReceiver, redis_client: redis.Redis
) -> None:
    """After a secret change both secrets sign for 24 h; once that expires, only the new one."""
    w = make_world()
    old, new = SECRET, new_secret(32)
    w.upsert(endpoint_id="e1", url=receiver.url(), secret=old)
    w.upsert(endpoint_id="e1", url=receiver.url(), secret=new)
    previous = WebhookKeys("taskmaster").previous_secret("e1")
    assert 0 < redis_client.ttl(previous) <= 24 * 3600
    assert old[6:].encode() not in redis_client.get(previous)
    w.notify("n-1")
    assert w.run_queued(datetime.now(UTC)) == ["delivered"]
    got = receiver.received[-1]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    verify(old, got.headers, got.body)
    verify(new, got.headers, got.body)
    redis_client.delete(previous)  # the 24 hours are over
    w.notify("n-2")
    assert w.run_queued(datetime.now(UTC)) == ["delivered"]
    got = receiver.received[-1]
    verify(new, got.headers, got.body)
    with pytest.raises(Unverified):
        verify(old, got.headers, got.body)


def test_an_internal_target_is_refused_when_private_targets_are_off(
    make_world: MakeWorld, receiver: WebhookReceiver
) -> None:
    """With TASKMASTER_WEBHOOK_ALLOW_PRIVATE off, a loopback endpoint is never connected to."""
    w = make_world(webhook_allow_private="false", webhook_retry_schedule="")
    w.upsert(endpoint_id="e1", url=receiver.url(), secret=SECRET)
    w.notify()
    assert w.run_queued(datetime.now(UTC)) == ["failed"]
    assert receiver.received == []
    assert "loopback" in w.events("webhook.failed")[0]["error"]


def test_a_deleted_endpoint_ends_its_pending_retries(
    make_world: MakeWorld, receiver: WebhookReceiver
) -> None:
    """A retry due after its endpoint was deleted is reported failed, not sent."""
    w = make_world()
    w.upsert(endpoint_id="e1", url=receiver.url(), secret=SECRET)
    receiver.script(Reply(503))
    w.notify()
    assert w.run_queued(datetime.now(UTC)) == ["retrying"]
    delete_endpoint(w.ctx("webhook.endpoint.delete"), EndpointDelete(endpoint_id="e1"))
    assert w.release(w.next_due("e1", WID, 2)) == ["failed"]
    assert len(receiver.received) == 1 and w.events("webhook.failed")[0]["reason"] == "endpoint_deleted"


def test_through_intake_and_dramatiq_workers_with_a_retry(
    make_world: MakeWorld, receiver: WebhookReceiver, redis_client: redis.Redis
) -> None:
    """End to end: upsert through intake, a 500 retried via the due store's releaser, delivered."""
    w = make_world(webhook_retry_schedule="0.05")
    runtime = w.runtime
    intake = Intake(runtime, "test")
    intake.ensure_group()
    broker = build_broker(runtime)
    worker = Worker(broker, worker_threads=2, worker_timeout=50)
    stop = threading.Event()
    releaser = threading.Thread(target=run_releaser, args=(w.due, stop, 0.02), daemon=True)
    worker.start()
    releaser.start()
    try:
        upsert = {"endpoint_id": "e1", "url": receiver.url(), "secret": SECRET, "categories": ["tasks"]}
        redis_client.xadd(
            "taskmaster:intake", {"job": json.dumps({"type": "webhook.endpoint.upsert", "data": upsert})}
        )
        intake.poll_once(block_ms=10)
        wait_for(lambda: w.row("e1") is not None, what="the endpoint")
        receiver.script(Reply(500))
        assert w.notify(category="tasks") == 1
        (event,) = wait_for(lambda: w.events("webhook.delivered"), what="webhook.delivered")
    finally:
        stop.set()
        worker.stop(timeout=5000)
        broker.close()
    assert event["attempts"] == 2 and event["job_type"] == "webhook.deliver"
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == WID
    verify(SECRET, second.headers, second.body)


def test_the_secret_is_sealed_between_intake_and_worker(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    """From the intake on, the secret travels encrypted: nowhere in Redis but the host's own intake
    entry is it in plain text; the worker opens it and stores it. A host cannot pass a sealed one."""
    from tests.test_worker_inprocess import Harness

    h = Harness(load_settings(env))
    try:
        h.submit(
            redis_client,
            {
                "type": "webhook.endpoint.upsert",
                "id": "up-1",
                "data": {"endpoint_id": "e1", "url": "https://a.example/h", "secret": SECRET},
            },
        )
        # The host's own intake entry holds it; nothing the daemon wrote does.
        assert [key for key, _ in redis_hits(redis_client, (SECRET[6:],))] == ["taskmaster:intake"]
        assert any(key.startswith("taskmaster:dq:") for key, _ in redis_hits(redis_client, ("sealed:",)))
        h.worker.start()
        wait_for(lambda: session_row(h.runtime, "e1") is not None, what="the endpoint stored")
        row = session_row(h.runtime, "e1")
        assert row is not None
        assert SecretBox.from_settings(h.runtime.settings).decrypt(row.secret) == SECRET

        sealed = "sealed:" + SecretBox.from_settings(h.runtime.settings).encrypt(SECRET).decode()
        forged = h.submit(
            redis_client,
            {
                "type": "webhook.endpoint.upsert",
                "id": "up-2",
                "data": {"endpoint_id": "e2", "url": "https://a.example/h", "secret": sealed},
            },
        )
        rejected = [fields for _, fields in redis_client.xrange("taskmaster:intake:rejected")]
        assert any(f[b"entry"].decode() == forged and b"whsec_" in f[b"error"] for f in rejected), rejected
    finally:
        h.close()


def session_row(runtime: Runtime, endpoint_id: str) -> WebhookEndpoint | None:
    with Session(runtime.db) as session:
        return session.get(WebhookEndpoint, endpoint_id)
