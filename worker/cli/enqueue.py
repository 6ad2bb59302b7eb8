"""`taskmaster-worker enqueue TYPE JSON`: submit one job from a shell."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from worker.cli.common import EXIT_FAILURE, EXIT_OK, die, settings_or_exit
from worker.cli.redis_access import redis_for_cli
from worker.settings import Settings


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "enqueue",
        help="submit one job to the intake stream",
        description="Submit one job, exactly as a host would (XADD to the intake stream).",
        epilog='example:\n  taskmaster-worker enqueue email.send \'{"to": "a@example.com", "subject": "Hi",'
        ' "text": "Hello"}\'\n  echo \'{...}\' | taskmaster-worker enqueue email.send -',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("type", help="the job type, such as email.send")
    parser.add_argument("data", help="the job's data as JSON, or - to read it from standard input")
    parser.add_argument("--id", help="idempotency key: the same id twice does the work once")
    parser.add_argument("--no-check", action="store_true", help="skip validation here (the daemon validates)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    text = sys.stdin.read() if args.data == "-" else args.data
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        die(f"the data is not valid JSON: {exc}", EXIT_FAILURE)
    if not args.no_check:
        _check(settings, args.type, data, args.id)
    from worker.client import Client
    from worker.keys import Keys

    with redis_for_cli(settings) as client:
        envelope = Client.envelope(args.type, data, args.id)
        entry = client.xadd(Keys(settings.redis_prefix).intake, {"job": envelope})
    print(entry.decode() if isinstance(entry, bytes) else entry)
    return EXIT_OK


def _check(settings: Settings, job_type: str, data: object, job_id: str | None) -> None:
    """Tell the operator now what the daemon would reject later."""
    from worker.client import Client
    from worker.registry import load_job_modules
    from worker.validation import Rejection, validate_entry

    registry = load_job_modules(settings.job_modules)
    envelope = Client.envelope(job_type, data if isinstance(data, dict) else {}, job_id)
    if not isinstance(data, dict):
        die("the data must be a JSON object", EXIT_FAILURE)
    try:
        validate_entry(envelope.encode(), registry, 1 << 30, {"settings": settings, "stage": "intake"})
    except Rejection as exc:
        die(f"rejected: {exc}", EXIT_FAILURE)
