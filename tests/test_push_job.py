"""The `push.send` job on a real Redis and SQL database, against the local FCM and token endpoint."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
import structlog
from dramatiq import Worker
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.push.actors import send_push
from jobs.push.attempts import device_id
from jobs.push.errors import FcmAuthError
from jobs.push.fcm import close_clients
from jobs.push.models import PushSend
from tests.fakes.fcm import FakeFcm, FakeGoogleOAuth, Outcome, ServiceAccount, make_service_account, running
from tests.helpers import events, wait_for
from worker.broker import build_broker
from worker.context import JobContext
from worker.db import migrate
from worker.db.models import PushToken, User
from worker.db.session import make_engine
from worker.errors import NotReady, PermanentError
from worker.events import JobRef
from worker.logging import configure_logging
from worker.registry import load_job_modules
from worker.runtime import Runtime
from worker.settings import load_settings
from worker.submit import enqueue


@pytest.fixture
def account(tmp_path: Path) -> ServiceAccount:
    return make_service_account(tmp_path / "sa")


@pytest.fixture
def fakes(account: ServiceAccount) -> Iterator[tuple[FakeGoogleOAuth, FakeFcm]]:
    with running(account) as pair:
        yield pair
    close_clients()


@pytest.fixture
def fcm(fakes: tuple[FakeGoogleOAuth, FakeFcm]) -> FakeFcm:
    return fakes[1]


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test's database: SQLite, or each of SQLite and PostgreSQL for a test asking for db_url.

    The SQL a test exercises decides: reading and removing devices runs on both backends; the
    tests of retries and reporting gain nothing from a second run on PostgreSQL.
    """
    if "db_url" in request.fixturenames:
        return str(request.getfixturevalue("db_url"))
    return f"sqlite:///{tmp_path / 'push.db'}"


@pytest.fixture
def push_env(
    env: dict[str, str], database: str, account: ServiceAccount, fakes: tuple[FakeGoogleOAuth, FakeFcm]
) -> dict[str, str]:
    """The daemon's settings: the migrated database, FCM and the token endpoint on loopback."""
    oauth, fcm = fakes
    migrate.upgrade(database)
    return {
        **env,
        "TASKMASTER_DATABASE_URL": database,
        "TASKMASTER_JOB_MODULES": "jobs.push",
        "TASKMASTER_FCM_PROJECT_ID": account.project_id,
        "TASKMASTER_FCM_CREDENTIALS_FILE": str(account.path),
        "TASKMASTER_FCM_BASE_URL": fcm.base_url,
        "TASKMASTER_GOOGLE_TOKEN_URI": oauth.token_uri,
        "TASKMASTER_PROVIDER_TIMEOUT": "5s",
        "TASKMASTER_JOB_MIN_BACKOFF": "0.05",
        "TASKMASTER_JOB_MAX_RETRIES": "4",
    }


@pytest.fixture
def runtime(push_env: dict[str, str]) -> Iterator[Runtime]:
    settings = load_settings(push_env)
    rt = Runtime(settings, load_job_modules(settings.job_modules))
    yield rt
    rt.close()


class Workers:
    """Dramatiq workers in this process, consuming the runtime's queues."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.broker = build_broker(runtime)
        self.worker = Worker(self.broker, worker_threads=2, worker_timeout=50)
        self.worker.start()

    def submit(self, data: dict[str, Any], job_id: str) -> None:
        job_type = self.runtime.registry.get("push.send")
        assert job_type is not None
        enqueue(
            self.runtime.redis,
            self.runtime.keys,
            job_type,
            data,
            idempotency_key=f"push.send:{job_id}",
            idempotency_ttl_s=self.runtime.settings.idempotency_ttl,
            job_id=job_id,
        )

    def close(self) -> None:
        self.worker.stop(timeout=5000)
        self.broker.close()


@pytest.fixture
def workers(runtime: Runtime) -> Iterator[Workers]:
    w = Workers(runtime)
    yield w
    w.close()


def add_user(db_url: str, user_id: str, devices: dict[str, str], *, erased: bool = False) -> None:
    """A user and their devices (token -> platform), as `user.upsert` leaves them."""
    engine = make_engine(db_url)
    try:
        with Session(engine) as session, session.begin():
            session.add(
                User(id=user_id, email=f"{user_id}@example.com", erased_at=_now() if erased else None)
            )
            session.flush()
            for token, platform in devices.items():
                session.add(PushToken(user_id=user_id, token=token, platform=platform))
    finally:
        engine.dispose()


def tokens_of(db_url: str, user_id: str) -> list[str]:
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            return list(session.scalars(select(PushToken.token).where(PushToken.user_id == user_id)))
    finally:
        engine.dispose()


def run_job(runtime: Runtime, data: dict[str, Any], job_id: str = "job-1") -> None:
    """One attempt of the handler, as the runtime calls it."""
    ctx = JobContext(
        runtime=runtime,
        job=JobRef(type="push.send", id=job_id, entry=None),
        submitted_ms=int(time.time() * 1000),
        retries=0,
        message_id="message-1",
    )
    send_push(ctx, PushSend.model_validate(data))


def push_events(client: redis.Redis, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events(client) if e["type"].startswith("push.") and kind in (None, e["type"])]


def _now() -> datetime:
    return datetime.now(UTC)


def message(user_id: str, **extra: Any) -> dict[str, Any]:
    return {"user_id": user_id, "title": "Review due", "body": "Q3 report", **extra}


def test_a_push_reaches_every_device_and_reports_each(
    workers: Workers, db_url: str, fcm: FakeFcm, redis_client: redis.Redis
) -> None:
    """Every device of the user gets the message; one push.sent each, naming the device by a hash."""
    # Given a user with a phone and a tablet
    add_user(db_url, "u1", {"fcm-phone-7Hq2": "android", "fcm-tablet-9Zx4": "ios"})
    # When push.send runs through the workers
    workers.submit(message("u1", notification_id="n-1", data={"task_id": "t-9"}), job_id="push-1")
    sent = wait_for(lambda: len(push_events(redis_client, "push.sent")) == 2 and push_events(redis_client))
    # Then each device got the message once, with the data for the app
    for token in ("fcm-phone-7Hq2", "fcm-tablet-9Zx4"):
        (received,) = fcm.delivered(token)
        assert received.message["notification"] == {"title": "Review due", "body": "Q3 report"}
        assert received.message["data"] == {"task_id": "t-9", "notification_id": "n-1"}
    by_device = {e["data"]["device"]: e["data"] for e in sent}
    assert set(by_device) == {device_id("fcm-phone-7Hq2"), device_id("fcm-tablet-9Zx4")}
    phone = by_device[device_id("fcm-phone-7Hq2")]
    assert phone["platform"] == "android" and phone["user_id"] == "u1" and phone["notification_id"] == "n-1"
    assert phone["id"] == "push-1" and phone["provider_message_id"].startswith("projects/taskmaster-test/")
    # And no token appears in the events
    stream = json.dumps(events(redis_client))
    assert "fcm-phone-7Hq2" not in stream and "fcm-tablet-9Zx4" not in stream


def test_an_unregistered_token_is_removed_from_the_user(
    workers: Workers, db_url: str, redis_client: redis.Redis
) -> None:
    """UNREGISTERED: push.failed for that device, its token deleted; the other device is sent to."""
    add_user(db_url, "u2", {"fcm-live-1": "android", "unregistered-old-1": "android"})
    workers.submit(message("u2"), job_id="push-2")
    wait_for(lambda: len(push_events(redis_client)) == 2, what="one outcome per device")
    (failed,) = push_events(redis_client, "push.failed")
    assert failed["data"]["device"] == device_id("unregistered-old-1")
    assert failed["data"]["reason"] == "unregistered" and failed["data"]["error"] == "UNREGISTERED"
    assert failed["data"]["removed"] is True
    assert tokens_of(db_url, "u2") == ["fcm-live-1"]
    assert not [e for e in events(redis_client) if e["type"] == "job.dead"]


def test_unavailable_and_internal_are_retried_until_sent(
    workers: Workers, database: str, fcm: FakeFcm, redis_client: redis.Redis
) -> None:
    """503 UNAVAILABLE then 500 INTERNAL: the job retries; the device that succeeded is not sent again."""
    add_user(database, "u3", {"fcm-flaky-1": "android", "fcm-steady-1": "ios"})
    fcm.script("fcm-flaky-1", "UNAVAILABLE", "INTERNAL")
    workers.submit(message("u3"), job_id="push-3")
    wait_for(lambda: len(push_events(redis_client, "push.sent")) == 2, what="both devices sent")
    assert [r.status for r in fcm.requests_for("fcm-flaky-1")] == [503, 500, 200]
    assert len(fcm.requests_for("fcm-steady-1")) == 1
    assert not push_events(redis_client, "push.failed")


def test_quota_exceeded_is_retried_after_retry_after(
    workers: Workers, database: str, fcm: FakeFcm, redis_client: redis.Redis
) -> None:
    """429 QUOTA_EXCEEDED with Retry-After: the job comes back later and the device is sent to."""
    add_user(database, "u4", {"fcm-busy-1": "android"})
    fcm.script("fcm-busy-1", Outcome("QUOTA_EXCEEDED", retry_after="1"))
    workers.submit(message("u4"), job_id="push-4")
    wait_for(lambda: push_events(redis_client, "push.sent"), timeout_s=15, what="the send after the wait")
    assert [r.status for r in fcm.requests_for("fcm-busy-1")] == [429, 200]


def test_retry_after_becomes_the_retry_delay(
    runtime: Runtime, database: str, fcm: FakeFcm, redis_client: redis.Redis
) -> None:
    """The handler asks Dramatiq for a retry after Retry-After, having sent to the other devices."""
    add_user(database, "u5", {"fcm-busy-2": "android", "fcm-calm-2": "ios"})
    fcm.script("fcm-busy-2", Outcome("QUOTA_EXCEEDED", retry_after="30"))
    with pytest.raises(dramatiq.Retry) as caught:
        run_job(runtime, message("u5"))
    assert caught.value.delay == 30_000
    assert [e["data"]["device"] for e in push_events(redis_client)] == [device_id("fcm-calm-2")]
    # The retry sends to the waiting device only.
    run_job(runtime, message("u5"))
    assert len(fcm.delivered("fcm-calm-2")) == 1 and len(fcm.delivered("fcm-busy-2")) == 1


def test_invalid_argument_fails_that_device_only(
    runtime: Runtime, database: str, fcm: FakeFcm, redis_client: redis.Redis
) -> None:
    """INVALID_ARGUMENT is reported for that device; the job succeeds for the others, tokens kept."""
    add_user(database, "u6", {"invalid-garbled": "web", "fcm-good-6": "android"})
    run_job(runtime, message("u6"))
    (failed,) = push_events(redis_client, "push.failed")
    assert failed["data"]["error"] == "INVALID_ARGUMENT" and failed["data"]["reason"] == "rejected"
    assert failed["data"]["removed"] is False
    assert len(push_events(redis_client, "push.sent")) == 1
    assert sorted(tokens_of(database, "u6")) == ["fcm-good-6", "invalid-garbled"]


def test_a_repeated_job_sends_to_no_device_twice(
    runtime: Runtime, database: str, fcm: FakeFcm, redis_client: redis.Redis
) -> None:
    """The same job run again (redelivery) sends and reports nothing new; another job does send."""
    add_user(database, "u7", {"fcm-once-7": "android", "invalid-7": "web"})
    run_job(runtime, message("u7"), job_id="same")
    run_job(runtime, message("u7"), job_id="same")
    assert len(fcm.requests_for("fcm-once-7")) == 1 and len(fcm.requests_for("invalid-7")) == 1
    assert len(push_events(redis_client)) == 2
    run_job(runtime, message("u7"), job_id="another")
    assert len(fcm.delivered("fcm-once-7")) == 2


def test_a_device_held_by_an_attempt_in_flight_waits_for_its_lease(
    runtime: Runtime, database: str, fcm: FakeFcm, redis_client: redis.Redis
) -> None:
    """A device another attempt is sending to is left alone; the job retries when the lease ends."""
    add_user(database, "u8", {"fcm-held-8": "android", "fcm-free-8": "ios"})
    key = f"taskmaster:push:attempt:id:job-1:{device_id('fcm-held-8')}"
    redis_client.set(key, "pending", px=20_000)
    with pytest.raises(dramatiq.Retry) as caught:
        run_job(runtime, message("u8"))
    assert 1_000 <= (caught.value.delay or 0) <= 20_000
    assert fcm.requests_for("fcm-held-8") == [] and len(fcm.delivered("fcm-free-8")) == 1


def test_an_open_breaker_stops_sending_until_its_cooldown(
    push_env: dict[str, str], database: str, fcm: FakeFcm
) -> None:
    """Failures past the threshold open the fcm breaker: later devices wait out the cool-down."""
    # Given a breaker opening after two failures, and two devices FCM answers 503 for
    env = {**push_env, "TASKMASTER_BREAKER_FAILURE_THRESHOLD": "2", "TASKMASTER_BREAKER_COOLDOWN": "30s"}
    settings = load_settings(env)
    rt = Runtime(settings, load_job_modules(settings.job_modules))
    add_user(database, "u15", {"unavailable-a": "android", "unavailable-b": "ios", "fcm-later-15": "web"})
    # When the job runs
    try:
        with pytest.raises(dramatiq.Retry, match="circuit breaker open") as caught:
            run_job(rt, message("u15"))
    finally:
        rt.close()
    # Then the third device is not tried, and the job comes back after the cool-down
    assert fcm.requests_for("fcm-later-15") == []
    assert 1_000 <= (caught.value.delay or 0) <= 30_000


def test_a_refused_channel_gives_the_device_back_and_raises(
    push_env: dict[str, str], database: str, fcm: FakeFcm, redis_client: redis.Redis
) -> None:
    """403 PERMISSION_DENIED for the project: the job fails to be retried, nothing recorded as sent."""
    settings = load_settings({**push_env, "TASKMASTER_FCM_PROJECT_ID": "not-ours"})
    rt = Runtime(settings, load_job_modules(settings.job_modules))
    add_user(database, "u9", {"fcm-dev-9": "android"})
    try:
        with pytest.raises(FcmAuthError):
            run_job(rt, message("u9"))
    finally:
        rt.close()
    assert redis_client.keys("taskmaster:push:attempt:*") == []
    assert push_events(redis_client) == []


def test_a_user_without_devices_is_skipped(runtime: Runtime, db_url: str, redis_client: redis.Redis) -> None:
    """No device: push.skipped (no_devices); an erased user: push.skipped (user_erased); no request."""
    add_user(db_url, "u10", {})
    add_user(db_url, "u11", {"fcm-erased-11": "android"}, erased=True)
    run_job(runtime, message("u10", notification_id="n-10"))
    run_job(runtime, message("u11"))
    skipped = push_events(redis_client, "push.skipped")
    assert [(e["data"]["user_id"], e["data"]["reason"]) for e in skipped] == [
        ("u10", "no_devices"),
        ("u11", "user_erased"),
    ]
    assert skipped[0]["data"]["notification_id"] == "n-10"


def test_an_unknown_user_is_not_ready(runtime: Runtime) -> None:
    """A user whose upsert has not arrived yet: NotReady, which the runtime retries for a while."""
    with pytest.raises(NotReady, match="u-missing"):
        run_job(runtime, message("u-missing"))


@pytest.mark.parametrize("missing", ["TASKMASTER_FCM_PROJECT_ID", "TASKMASTER_FCM_CREDENTIALS_FILE"])
def test_missing_configuration_fails_permanently(
    push_env: dict[str, str], database: str, missing: str
) -> None:
    """Without the project id or the key file, push.send fails for good, naming the setting."""
    add_user(database, "u12", {"fcm-dev-12": "android"})
    settings = load_settings({k: v for k, v in push_env.items() if k != missing})
    rt = Runtime(settings, load_job_modules(settings.job_modules))
    try:
        with pytest.raises(PermanentError, match=missing):
            run_job(rt, message("u12"))
    finally:
        rt.close()


def test_a_job_without_configuration_is_dead_lettered_at_once(
    push_env: dict[str, str], redis_client: redis.Redis
) -> None:
    """Through the workers: job.dead on the first attempt, its error naming the missing setting."""
    env = {k: v for k, v in push_env.items() if k != "TASKMASTER_FCM_PROJECT_ID"}
    settings = load_settings(env)
    rt = Runtime(settings, load_job_modules(settings.job_modules))
    w = Workers(rt)
    try:
        w.submit(message("u13"), job_id="push-13")
        (dead,) = wait_for(lambda: [e for e in events(redis_client) if e["type"] == "job.dead"])
    finally:
        w.close()
        rt.close()
    assert "TASKMASTER_FCM_PROJECT_ID" in dead["data"]["error"] and dead["data"]["retries"] == 0


def test_log_lines_carry_neither_registration_nor_access_tokens(
    runtime: Runtime, database: str, fcm: FakeFcm, capsys: pytest.CaptureFixture[str]
) -> None:
    """Debug logs of a job with every outcome show device hashes, never a token."""
    add_user(
        database, "u14", {"fcm-secret-Qx81": "android", "unregistered-Zr55": "ios", "invalid-Kp09": "web"}
    )
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("debug", "json")
    try:
        run_job(runtime, message("u14"))
    finally:
        structlog.reset_defaults()
        # The handler writes to this test's captured stderr: later tests must not inherit it.
        root.handlers[:], root.level = handlers, level
    err = capsys.readouterr().err
    assert device_id("unregistered-Zr55") in err
    for secret in ("fcm-secret-Qx81", "unregistered-Zr55", "invalid-Kp09", *fcm.oauth.grants):
        assert secret not in err
