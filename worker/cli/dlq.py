"""`taskmaster-worker dlq list|retry|purge`: the jobs that failed for good."""

from __future__ import annotations

import argparse
from typing import Any

from worker.cli.common import EXIT_OK, settings_or_exit
from worker.cli.redis_access import redis_for_cli


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dlq",
        help="list, retry or purge dead letters",
        description="Dead letters are jobs that failed for good (retries or age exhausted).",
        epilog="examples:\n  taskmaster-worker dlq list\n  taskmaster-worker dlq retry --all\n"
        "  taskmaster-worker dlq purge HOST-JOB-ID",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="dlq_command", metavar="list|retry|purge", required=True)
    commands.add_parser("list", help="show dead letters").set_defaults(func=run_list)
    for name, func, text in (("retry", run_retry, "put back in their queue"), ("purge", run_purge, "delete")):
        sub = commands.add_parser(name, help=f"{text}: the given ids (redis, message or job id) or --all")
        sub.add_argument("ids", nargs="*")
        sub.add_argument("--all", action="store_true")
        sub.set_defaults(func=func)


def _store(settings: Any, client: Any) -> Any:
    from worker.deadletters import DeadLetters
    from worker.keys import Keys

    return DeadLetters(client, Keys(settings.redis_prefix))


def run_list(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    with redis_for_cli(settings) as client:
        letters = _store(settings, client).list()
    if not letters:
        print("no dead letters")
    for letter in letters:
        job = letter.job
        print(
            f"{letter.dead_at.isoformat(timespec='seconds')}  {letter.queue:<7}  {job.get('type', '?'):<24}"
            f"  id={job.get('id') or '-'}  entry={job.get('entry') or '-'}  redis_id={letter.redis_id}"
        )
        print(f"    {letter.error}")
    return EXIT_OK


def _selection(args: argparse.Namespace) -> set[str] | None:
    if args.all:
        return None
    if not args.ids:
        from worker.cli.common import die

        die("give the ids to act on, or --all")
    return set(args.ids)


def run_retry(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    selection = _selection(args)
    with redis_for_cli(settings) as client:
        moved = _store(settings, client).retry(selection)
    print(f"{moved} dead letter(s) back in their queues")
    return EXIT_OK


def run_purge(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    selection = _selection(args)
    with redis_for_cli(settings) as client:
        removed = _store(settings, client).purge(selection)
    print(f"{removed} dead letter(s) purged")
    return EXIT_OK
