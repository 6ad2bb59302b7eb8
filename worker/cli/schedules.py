"""`taskmaster-worker schedules validate|list|run`: check schedules.yaml, show it, fire one entry."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis

from worker.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, die, settings_or_exit
from worker.errors import ConfigError, RedisUnavailable
from worker.registry import Registry, load_job_modules
from worker.scheduler.config import Schedule, load_schedule
from worker.scheduler.timing import next_fire_times
from worker.settings import Settings

EPILOG = """\
examples:
  taskmaster-worker schedules validate                 check TASKMASTER_SCHEDULES_FILE
  taskmaster-worker schedules validate new.yaml        check another file before installing it
  taskmaster-worker schedules list                     every entry and its next three fire times
  taskmaster-worker schedules run calendar-sync        enqueue that entry's job now

`run` enqueues one job of the entry now, whether the entry is enabled or not, and leaves its
scheduled fires as they are.

exit status:
  0  success (validate: the file is valid)
  1  validate: the file is invalid; run: no such entry
  2  invalid configuration, or (list, run) an invalid schedules file
  3  Redis could not be reached (run)
"""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "schedules",
        help="validate, list or run the entries of schedules.yaml",
        description="Check the schedules file, show its next fire times, or fire one entry now.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="schedules_command", metavar="COMMAND", required=True)
    validate = commands.add_parser(
        "validate", help="check a schedules file; print 'ok: N entries' or the problems"
    )
    validate.add_argument("file", nargs="?", type=Path, help="the file (default: TASKMASTER_SCHEDULES_FILE)")
    validate.set_defaults(func=run_validate)
    show = commands.add_parser("list", help="show every entry and its next three fire times")
    show.add_argument("--file", type=Path, help="the file (default: TASKMASTER_SCHEDULES_FILE)")
    show.set_defaults(func=run_list)
    fire = commands.add_parser("run", help="enqueue one entry's job now")
    fire.add_argument("name", help="the entry's name in the schedules file")
    fire.add_argument("--file", type=Path, help="the file (default: TASKMASTER_SCHEDULES_FILE)")
    fire.set_defaults(func=run_fire)


def run_validate(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    registry = _registry(settings)
    path: Path = args.file or settings.schedules_file
    if args.file is not None and not path.exists():
        die(f"{path}: no such file", EXIT_FAILURE)
    try:
        schedule = load_schedule(path, registry)
    except ConfigError as exc:
        print(exc)
        return EXIT_FAILURE
    note = f" ({path} not found: the default schedule)" if schedule.is_default else ""
    print(f"ok: {len(schedule.entries)} entries{note}")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    schedule = _schedule(settings, _registry(settings), args.file)
    print(f"{schedule.source} (timezone {schedule.timezone}, {len(schedule.entries)} entries)")
    if not schedule.entries:
        return EXIT_OK
    now = datetime.now(UTC)
    rows = [("NAME", "JOB", "WHEN", "TIMEZONE", "ENABLED", "NEXT FIRES")]
    for name, entry in sorted(schedule.entries.items()):
        zone = ZoneInfo(entry.timezone)
        fires = next_fire_times(entry.trigger, now, 3) if entry.enabled else []
        shown = ", ".join(f.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S%z") for f in fires) or "-"
        rows.append((name, entry.job, entry.trigger.describe(), entry.timezone, _yes(entry.enabled), shown))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return EXIT_OK


def run_fire(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    registry = _registry(settings)
    schedule = _schedule(settings, registry, args.file)
    entry = schedule.entries.get(args.name)
    if entry is None:
        known = ", ".join(sorted(schedule.entries)) or "none"
        die(f"no entry {args.name!r} in {schedule.source}; entries: {known}", EXIT_FAILURE)
    job_type = registry.get(entry.job)
    assert job_type is not None  # the loader checked it
    key = f"manual:{entry.name}:{datetime.now(UTC).isoformat(timespec='milliseconds').replace('+00:00', 'Z')}"

    from worker.runtime import Runtime
    from worker.submit import enqueue

    embedded = None
    started = False
    if settings.redis_url is None:
        from worker.embedded_redis import EmbeddedRedis

        embedded = EmbeddedRedis(settings.data_dir)
        try:
            started = embedded.ensure_running()
        except RedisUnavailable as exc:
            die(str(exc), EXIT_UNAVAILABLE)
    runtime = Runtime(settings, registry)
    try:
        outcome = enqueue(
            runtime.redis,
            runtime.keys,
            job_type,
            entry.data,
            idempotency_key=key,
            idempotency_ttl_s=settings.idempotency_ttl,
        )
    except redis.RedisError as exc:
        die(f"cannot reach Redis: {exc}", EXIT_UNAVAILABLE)
    finally:
        runtime.close()
        if started and embedded is not None:
            embedded.shutdown()
    if outcome != "enqueued":
        die(f"{entry.name}: already fired with key {key}", EXIT_FAILURE)
    print(f"fired {entry.name}: job {entry.job} enqueued (idempotency key {key})")
    return EXIT_OK


def _registry(settings: Settings) -> Registry:
    try:
        return load_job_modules(settings.job_modules)
    except ConfigError as exc:
        die(str(exc), EXIT_CONFIG)


def _schedule(settings: Settings, registry: Registry, file: Path | None) -> Schedule:
    try:
        return load_schedule(file or settings.schedules_file, registry)
    except ConfigError as exc:
        die(f"invalid schedules file:\n{exc}", EXIT_CONFIG)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
