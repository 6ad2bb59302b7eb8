"""`taskmaster-worker schedules validate|list|run` (worker/cli/schedules.py)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import BaseModel

from worker.cli import common
from worker.cli import schedules as cli
from worker.keys import Keys
from worker.registry import JobType, registry

GOOD = """\
timezone: Europe/Berlin
schedules:
  nightly:
    job: test.cli
    cron: "30 2 * * *"
    data: {n: 2}
  often:
    job: test.cli
    every: 1h
    timezone: UTC
    enabled: false
"""


class CliJob(BaseModel):
    n: int = 0


def _handle(ctx: Any, data: Any) -> None:
    return None


@pytest.fixture
def cli_env(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The daemon environment in os.environ, a test job type in the global registry, no logging setup."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setattr(common, "configure_logging", lambda *args, **kwargs: None)
    registry.add(JobType(name="test.cli", model=CliJob, handler=_handle))
    yield env
    registry._types.pop("test.cli", None)


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="taskmaster-worker")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["schedules", *argv])
    code: int = args.func(args)
    return code


def test_validate_ok(cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file: exit 0 and 'ok: N entries'."""
    Path(cli_env["TASKMASTER_SCHEDULES_FILE"]).write_text(GOOD)
    assert run("validate") == 0
    assert capsys.readouterr().out.strip() == "ok: 2 entries"


def test_validate_invalid_file(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid file given on the command line: exit 1 and the message naming file, line and entry."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("job: test.cli\n    every", "job: test.nope\n    every"))
    assert run("validate", str(bad)) == 1
    out = capsys.readouterr().out
    assert f"{bad}:8: entry 'often': unknown job 'test.nope'; known jobs:" in out
    assert "test.cli" in out


def test_validate_missing(cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """No file at the configured path is the default schedule; a named file that is missing fails."""
    assert run("validate") == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("ok: 0 entries")
    with pytest.raises(SystemExit) as info:
        run("validate", "no-such.yaml")
    assert info.value.code == 1


def test_list_shows_entries_and_next_fires(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """list prints each entry's job, trigger, zone, enabled flag and next three fire times."""
    Path(cli_env["TASKMASTER_SCHEDULES_FILE"]).write_text(GOOD)
    assert run("list") == 0
    lines = capsys.readouterr().out.splitlines()
    nightly = next(line for line in lines if line.startswith("nightly"))
    often = next(line for line in lines if line.startswith("often"))
    assert "test.cli" in nightly and "cron '30 2 * * *'" in nightly and "Europe/Berlin" in nightly
    assert nightly.count(" 02:30:00+0") + nightly.count(" 03:00:00+0200") == 3
    assert "every 1h" in often and " no " in often and often.rstrip().endswith("-")


def test_list_invalid_file_is_a_config_error(cli_env: dict[str, str]) -> None:
    """list of an invalid file exits 2, like the daemon would."""
    Path(cli_env["TASKMASTER_SCHEDULES_FILE"]).write_text("schedules: 3\n")
    with pytest.raises(SystemExit) as info:
        run("list")
    assert info.value.code == 2


def test_run_fires_one_now(
    cli_env: dict[str, str], redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """run NAME enqueues the entry's job once, under a manual idempotency key, even if disabled."""
    Path(cli_env["TASKMASTER_SCHEDULES_FILE"]).write_text(GOOD)
    keys = Keys("taskmaster")
    assert run("run", "often") == 0
    assert run("run", "nightly") == 0
    out = capsys.readouterr().out
    assert "fired often: job test.cli enqueued (idempotency key manual:often:" in out
    assert redis_client.llen(keys.queue("default")) == 2
    assert len(list(redis_client.scan_iter(match=keys.idempotency("manual:*")))) == 2
    with pytest.raises(SystemExit) as info:
        run("run", "nope")
    assert info.value.code == 1


def test_run_with_the_embedded_redis(
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without TASKMASTER_REDIS_URL, run starts the embedded Redis, enqueues, and stops it again."""
    from worker.embedded_redis import EmbeddedRedis

    monkeypatch.delenv("TASKMASTER_REDIS_URL")
    Path(cli_env["TASKMASTER_SCHEDULES_FILE"]).write_text(GOOD)
    assert run("run", "nightly") == 0
    assert "fired nightly" in capsys.readouterr().out
    assert (tmp_path / "var" / "redis").is_dir()
    assert not EmbeddedRedis(tmp_path / "var").alive()
