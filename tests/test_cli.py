"""The CLI against a real Redis: enqueue, status, schema, config and the dead letters."""

from __future__ import annotations

import json

import pytest
import redis

from tests.helpers import wait_for
from tests.jobtypes import Anything, registered
from tests.test_worker_inprocess import Harness
from worker.cli.main import main
from worker.context import JobContext
from worker.registry import JobType
from worker.settings import load_settings


@pytest.fixture
def cli_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_enqueue_adds_exactly_what_a_host_would(cli_env: dict[str, str], redis_client: redis.Redis,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`enqueue` checks the job, then XADDs the contract's envelope and prints the entry id."""
    assert (
        main(["enqueue", "email.send", '{"to": "a@example.com", "subject": "Hi", "text": "x"}', "--id", "k"])
        == 0
    )
    entry = capsys.readouterr().out.strip()
    ((got, fields),) = redis_client.xrange("taskmaster:intake")
    assert got.decode() == entry
    assert json.loads(fields[b"job"]) == {
        "type": "email.send",
        "id": "k",
        "data": {"to": "a@example.com", "subject": "Hi", "text": "x"},
    }
    with pytest.raises(SystemExit) as caught:
        main(["enqueue", "email.send", '{"to": "nope", "subject": "Hi", "text": "x"}'])
    assert caught.value.code == 1
    assert "data.to[0]" in capsys.readouterr().err


def test_status_reports_and_exits_zero(cli_env: dict[str, str], redis_client: redis.Redis,
                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`status --json` shows queues, intake and database; exit 0 whatever it finds."""
    redis_client.xadd("taskmaster:intake", {"job": "{}"})
    lane = "taskmaster:lane:notification.send"
    for _ in range(3):
        redis_client.xadd(lane, {"job": "{}"})
    redis_client.xgroup_create(lane, "taskmaster-worker", id="0")
    redis_client.xreadgroup("taskmaster-worker", "c", {lane: ">"}, count=1)
    assert main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["redis"] == "ok"
    assert set(report["queues"]) == {"urgent", "default", "bulk"}
    assert report["intake"]["length"] == 1
    assert report["lanes"] == {"notification.send": {"waiting": 2, "pending": 1}}
    assert report["database"].startswith(("ok", "unavailable"))


def test_status_exits_3_without_redis(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`status` exits non-zero only when Redis cannot be reached at all."""
    for key, value in {**env, "TASKMASTER_REDIS_URL": "redis://127.0.0.1:1/0"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as caught:
        main(["status"])
    assert caught.value.code == 3


def test_schema_prints_every_job_type(capsys: pytest.CaptureFixture[str]) -> None:
    """`schema` gives a JSON Schema per job type, for host-side validation."""
    assert main(["schema"]) == 0
    document = json.loads(capsys.readouterr().out)
    email = document["types"]["email.send"]
    assert (
        email["required"] == ["to"] and "template" in email["properties"] and "subject" in email["properties"]
    )


def test_config_masks_secrets(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """`config` prints every setting with the Redis password masked; `--check` validates only."""
    for key, value in {**env, "TASKMASTER_REDIS_URL": "redis://:sekrit@127.0.0.1:1/0"}.items():
        monkeypatch.setenv(key, value)
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "TASKMASTER_REDIS_URL=redis://:********@127.0.0.1:1/0" in out and "sekrit" not in out
    assert main(["config", "--check"]) == 0
    assert "configuration ok" in capsys.readouterr().out


def test_dlq_list_retry_purge(cli_env: dict[str, str], redis_client: redis.Redis,
                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """A job that failed for good is listed with its error, can be retried, and purged."""
    failing = True

    def flaky(ctx: JobContext, data: Anything) -> None:
        if failing:
            raise RuntimeError("the provider is down")

    settings = load_settings({**cli_env, "TASKMASTER_JOB_MAX_RETRIES": "0"})
    with registered(JobType("test.flaky", Anything, flaky)):
        harness = Harness(settings)
        harness.worker.start()
        try:
            harness.submit(redis_client, {"type": "test.flaky", "id": "f-1", "data": {}})
            wait_for(lambda: redis_client.zcard("taskmaster:dq:default.XQ") == 1, what="the dead letter")
            assert main(["dlq", "list"]) == 0
            listed = capsys.readouterr().out
            assert (
                "test.flaky" in listed
                and "id=f-1" in listed
                and "RuntimeError: the provider is down" in listed
            )
            failing = False
            assert main(["dlq", "retry", "f-1"]) == 0
            wait_for(lambda: redis_client.zcard("taskmaster:dq:default.XQ") == 0)
            wait_for(
                lambda: redis_client.hlen("taskmaster:dq:default.msgs") == 0,
                what="the retried job to be done",
            )
        finally:
            harness.close()
    capsys.readouterr()
    assert main(["dlq", "list"]) == 0
    assert "no dead letters" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["dlq", "purge"])
    assert main(["dlq", "purge", "--all"]) == 0
