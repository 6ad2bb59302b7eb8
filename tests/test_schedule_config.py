"""Loading and validating schedules.yaml (worker/scheduler/config.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from worker.errors import ConfigError
from worker.registry import JobType, Registry, load_job_modules
from worker.scheduler import config
from worker.scheduler.config import DEFAULT_MISFIRE_GRACE_S, default_text, load_schedule, parse_schedule
from worker.scheduler.timing import Cron, Every
from worker.settings import load_settings


class Report(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str
    count: int = 1
    when: str | None = None


class Nothing(BaseModel):
    pass


def _handle(ctx: Any, data: Any) -> None:
    return None


@pytest.fixture
def registry() -> Registry:
    """A registry of our own with a public job type and an internal one."""
    reg = Registry()
    reg.add(JobType(name="test.report", model=Report, handler=_handle))
    reg.add(JobType(name="test.cleanup", model=Nothing, handler=_handle, public=False))
    return reg


def parse(text: str, registry: Registry) -> Any:
    return parse_schedule(textwrap.dedent(text), "schedules.yaml", registry)


def test_full_entry_and_defaults(registry: Registry) -> None:
    """Every key is read; omitted ones take their documented defaults."""
    schedule = parse(
        """
        timezone: Europe/Berlin
        schedules:
          report:
            job: test.report
            data: {to: ops@example.com, when: 2026-01-01}
            cron: "0 6 * * 1-5"
            jitter: 30s
            misfire_grace: 2h
            catchup: all
            overlap: allow
          cleanup:
            job: test.cleanup
            every: 5m
            timezone: UTC
            enabled: false
        """,
        registry,
    )
    report, cleanup = schedule.entries["report"], schedule.entries["cleanup"]
    assert schedule.timezone == "Europe/Berlin"
    assert isinstance(report.trigger, Cron)
    assert report.trigger == Cron("0 6 * * 1-5", report.trigger.zone)
    assert str(report.trigger.zone) == "Europe/Berlin"
    assert report.data == {"to": "ops@example.com", "when": "2026-01-01"}  # YAML's date made JSON-ready
    assert (report.jitter_s, report.misfire_grace_s, report.catchup, report.overlap) == (
        30,
        7200,
        "all",
        "allow",
    )
    assert report.line == 4
    assert cleanup.trigger == Every(300)
    assert (cleanup.timezone, cleanup.enabled, cleanup.catchup, cleanup.overlap) == (
        "UTC",
        False,
        "once",
        "skip",
    )
    assert cleanup.misfire_grace_s == DEFAULT_MISFIRE_GRACE_S == 3600


def test_empty_schedules(registry: Registry) -> None:
    """An empty file, or `schedules:` with nothing under it, is a valid empty schedule."""
    assert parse("", registry).entries == {}
    assert parse("schedules:\n", registry).entries == {}
    assert parse("timezone: UTC\nschedules: {}\n", registry).timezone == "UTC"


BAD = [
    # (document, line, text expected in the message)
    ("colour: red\n", 1, "unknown key 'colour'; allowed: timezone, schedules"),
    ("timezone: Mars/Olympus\n", 1, "timezone 'Mars/Olympus' is not an IANA time zone"),
    ("schedules: [a, b]\n", 1, "schedules must be a mapping"),
    (
        "schedules:\n  a:\n    job: nope\n    every: 5m\n",
        3,
        "entry 'a': unknown job 'nope'; known jobs: test.cleanup, test.report",
    ),
    (
        "schedules:\n  a:\n    every: 5m\n",
        2,
        "entry 'a': job is missing; known jobs: test.cleanup, test.report",
    ),
    (
        "schedules:\n  a:\n    job: test.cleanup\n",
        2,
        "entry 'a': give exactly one of cron (5 fields) or every",
    ),
    (
        "schedules:\n  a:\n    job: test.cleanup\n    cron: '* * * * *'\n    every: 1m\n",
        5,
        "entry 'a': give exactly one of cron",
    ),
    (
        "schedules:\n  a:\n    job: test.cleanup\n    cron: '61 * * * *'\n",
        4,
        "entry 'a': cron '61 * * * *', minute field",
    ),
    ("schedules:\n  a:\n    job: test.cleanup\n    cron: '0 0 30 2 *'\n", 4, "never fires"),
    (
        "schedules:\n  a:\n    job: test.cleanup\n    every: soon\n",
        4,
        "every: invalid duration 'soon': use 30s, 5m",
    ),
    (
        "schedules:\n  a:\n    job: test.cleanup\n    every: 500ms\n",
        4,
        "whole number of seconds, at least 1s",
    ),
    (
        "schedules:\n  a:\n    job: test.cleanup\n    every: 1m\n    jitter: -1\n",
        5,
        "jitter: invalid duration",
    ),
    ("schedules:\n  a:\n    job: test.cleanup\n    every: 1m\n    misfire_grace: 0\n", 5, "more than 0"),
    (
        "schedules:\n  a:\n    job: test.cleanup\n    every: 1m\n    enabled: 'yes'\n",
        5,
        "enabled must be true or false",
    ),
    (
        "schedules:\n  a:\n    job: test.cleanup\n    every: 1m\n    catchup: never\n",
        5,
        "catchup 'never' is not allowed; use one of: skip, once, all",
    ),
    (
        "schedules:\n  a:\n    job: test.cleanup\n    every: 1m\n    overlap: queue\n",
        5,
        "overlap 'queue' is not allowed; use one of: skip, allow",
    ),
    (
        "schedules:\n  a:\n    job: test.cleanup\n    every: 1m\n    timezone: Berlin\n",
        5,
        "not an IANA time zone",
    ),
    (
        "schedules:\n  a:\n    job: test.cleanup\n    every: 1m\n    retries: 3\n",
        5,
        "entry 'a': unknown key 'retries'; allowed: job, data",
    ),
    ("schedules:\n  a:\n    job: test.cleanup\n    every: 1m\n    every: 2m\n", 5, "'every' is given twice"),
    ("schedules:\n  a b:\n    job: test.cleanup\n    every: 1m\n", 2, "entry names use letters"),
    ("schedules:\n  a: daily\n", 2, "entry 'a': an entry must be a mapping"),
    (
        "schedules:\n  a:\n    job: test.report\n    every: 1m\n",
        2,
        "data.to: Field required (job test.report)",
    ),
    (
        "schedules:\n  a:\n    job: test.report\n    every: 1m\n    data:\n      to: x\n      count: many\n",
        7,
        "data.count: Input should be a valid integer",
    ),
    ("schedules:\n  a:\n    job: test.report\n    every: 1m\n    data: [1]\n", 5, "data must be a mapping"),
    (
        "schedules:\n  a:\n    job: test.cleanup\n    cron: */5 * * * *\n",
        4,
        'must be quoted, e.g. cron: "*/15 * * * *"',
    ),
    ("schedules:\n  a: {job: test.cleanup\n", 3, "invalid YAML"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD)
def test_invalid_files_name_file_line_and_entry(
    registry: Registry, text: str, line: int, message: str
) -> None:
    """Each mistake is a ConfigError naming the file, the line, the entry and what is allowed."""
    with pytest.raises(ConfigError) as info:
        parse_schedule(text, "/etc/taskmaster/schedules.yaml", registry)
    lines = str(info.value).splitlines()
    assert any(
        text_line.startswith(f"/etc/taskmaster/schedules.yaml:{line}: ") and message in text_line
        for text_line in lines
    ), lines


def test_every_problem_is_reported_in_line_order(registry: Registry) -> None:
    """All problems of a file are listed at once, sorted by line."""
    text = (
        "schedules:\n  a:\n    job: nope\n    every: 1m\n  b:\n    job: test.cleanup\n    every: x\nfoo: 1\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_schedule(text, "s.yaml", registry)
    assert [line.split(":")[1] for line in str(info.value).splitlines()] == ["3", "7", "8"]


def test_internal_job_types_may_be_scheduled(registry: Registry) -> None:
    """A job type that intake refuses (public=False) is still a valid schedule target."""
    assert (
        parse("schedules:\n  c:\n    job: test.cleanup\n    every: 1h\n", registry).entries["c"].job
        == "test.cleanup"
    )


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})


def test_missing_file_falls_back_to_the_default(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schedules file that does not exist is not an error: the packaged default is used and logged."""
    log = RecordingLog()
    monkeypatch.setattr(config, "log", log)
    missing = tmp_path / "schedules.yaml"
    schedule = load_schedule(missing, registry)
    assert schedule.is_default and schedule.entries == {}
    assert schedule.source == "worker/scheduler/default.yaml"
    assert log.events == [
        {"event": "schedules file not found, using the default schedule", "looked_for": str(missing)}
    ]


def test_shipped_schedules_validate() -> None:
    """The repository's schedules.yaml and the packaged default validate with today's job types."""
    registry = load_job_modules(load_settings({}).job_modules)
    repo_file = Path(__file__).resolve().parent.parent / "schedules.yaml"
    assert load_schedule(repo_file, registry).timezone == "UTC"
    assert parse_schedule(default_text(), "default.yaml", registry).entries == {}
