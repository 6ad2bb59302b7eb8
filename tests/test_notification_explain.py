"""`taskmaster-worker explain`: per channel what would happen and why, changing nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from tests.test_notification_send import MODULES, Rig, open_rig
from worker.cli.main import main


@pytest.fixture
def rig(env: dict[str, str]) -> Iterator[Rig]:
    yield from open_rig(env)


@pytest.fixture
def cli_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in {**env, "TASKMASTER_JOB_MODULES": MODULES}.items():
        monkeypatch.setenv(key, value)
    return env


def test_explain_prints_each_channel_and_why(
    cli_env: dict[str, str], rig: Rig, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quiet hours in Berlin, push off for the category, webhook off: one line per channel, nothing held."""
    rig.user(
        "u1",
        tz="Europe/Berlin",
        quiet_hours={"start": "22:00", "end": "07:00"},
        channels={"email": True, "push": True, "webhook": False},
        categories={"task.due": {"push": False}},
    )
    data = {"user_id": "u1", "category": "task.due", "title": "Report due", "priority": "high"}
    assert main(["explain", json.dumps(data), "--at", "2026-07-14T23:30:00+02:00"]) == 0
    out = capsys.readouterr().out
    assert "email: would hold until 07:00 Europe/Berlin for quiet hours" in out
    assert "push: suppressed by the user's choice for category 'task.due' on push" in out
    assert "webhook: suppressed by the user's choice: webhook is off" in out
    assert not redis_client.keys("*notif:batch*") and redis_client.zcard("taskmaster:due") == 0
    assert not redis_client.exists("taskmaster:events")
    assert rig.log() == []


def test_explain_names_the_digest_close(
    cli_env: dict[str, str], rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    """A normal notification in the day would join the digest closing at the window's end."""
    rig.user("u1")
    data = {"user_id": "u1", "category": "task.due", "title": "Report due", "channels": ["email"]}
    assert main(["explain", json.dumps(data), "--at", "2026-07-14T10:00:00+00:00"]) == 0
    assert "email: would join the digest closing at 10:05 UTC" in capsys.readouterr().out


def test_explain_unknown_user_fails_with_a_message(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown user is an error naming the user, exit status 1."""
    data = {"user_id": "ghost", "category": "x", "title": "t"}
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", json.dumps(data)])
    assert exit_info.value.code == 1
    assert "'ghost' is not known" in capsys.readouterr().err
