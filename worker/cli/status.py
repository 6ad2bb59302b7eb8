"""`taskmaster-worker status`: Redis, database, queues, dead letters, intake lag, scheduler."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from worker.cli.common import EXIT_OK, settings_or_exit
from worker.cli.redis_access import redis_for_cli


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="show queues, dead letters, intake lag and the scheduler",
        description="Report what the daemon's state in Redis and the database looks like. Exits 0"
        " whatever it finds; exits 3 only when Redis cannot be reached at all.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from worker.errors import ConfigError
    from worker.keys import Keys
    from worker.registry import load_job_modules
    from worker.status import gather

    settings = settings_or_exit()
    try:
        lanes = load_job_modules(settings.job_modules).lanes()
    except ConfigError as exc:  # status still tells what it can; `config --check` names this
        print(f"taskmaster-worker: {exc}", file=sys.stderr)
        lanes = []
    with redis_for_cli(settings, start_embedded=False) as client:
        report = gather(
            client,
            Keys(settings.redis_prefix),
            heartbeat_timeout_s=settings.worker_heartbeat_timeout,
            lanes=lanes,
        )
    report = {"redis": "ok", "database": _database(settings), **report}
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return EXIT_OK
    print(f"redis      {report['redis']}")
    print(f"database   {report['database']}")
    print(f"workers    {report['workers_alive']} worker process(es) alive")
    intake = report["intake"]
    print(f"intake     {intake['unread']} unread, {intake['pending']} being settled")
    print(f"rejected   {report['rejected']} entries in the rejected stream")
    print(f"held       {report['held']} job(s) waiting for their due time")
    for queue, depth in report["queues"].items():
        print(
            f"queue      {queue:<8} {depth['ready']} ready, {depth['delayed']} delayed, {depth['dead']} dead"
        )
    for lane, depth in report["lanes"].items():
        print(f"lane       {lane:<8} {depth['waiting']} waiting, {depth['pending']} being decided")
    for name, state in sorted(report["breakers"].items()):
        print(f"breaker    {name:<12} {state}")
    print(f"scheduler  leader {report['scheduler_leader'] or '(none)'}")
    for key, value in sorted(report["scheduler"].items()):
        print(f"           {key}: {value}")
    return EXIT_OK


def _database(settings: Any) -> str:
    try:
        from sqlalchemy import text

        from worker.db.migrate import current_revision, head_revision
        from worker.db.session import make_engine

        engine = make_engine(settings.sqlalchemy_url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        current, head = current_revision(settings.sqlalchemy_url), head_revision()
        behind = (
            "" if current == head else f" (schema {current or 'empty'}, run `db upgrade` to reach {head})"
        )
        return f"ok{behind}"
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}: {exc}"[:300]
