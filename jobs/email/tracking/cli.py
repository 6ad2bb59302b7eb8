"""`taskmaster-worker suppressions list`: the addresses no email goes to, and why."""

from __future__ import annotations

import argparse
import json
from typing import Any

from worker.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, die, settings_or_exit
from worker.db.tracking import SUPPRESSION_REASONS
from worker.registry import cli_command

EPILOG = """\
examples:
  taskmaster-worker suppressions list
  taskmaster-worker suppressions list --reason bounce --json

Reasons: bounce (a hard bounce reported by the provider), complaint (the recipient reported
the email as spam), manual (the host's suppression.add). The host lifts one with the job
suppression.delete {"address": "..."}.

exit status:
  0  success
  1  failure (such as a database schema behind this release)
  2  invalid configuration
  3  the database could not be reached
"""


@cli_command
def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "suppressions",
        help="list the suppressed email addresses with their reasons",
        description="The suppression list: addresses that no email goes to until the host lifts them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="suppressions_command", metavar="list", required=True)
    listing = commands.add_parser("list", help="show each suppressed address, its reason and since when")
    listing.add_argument("--reason", choices=SUPPRESSION_REASONS, help="only this reason")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    # Imported here: SQLAlchemy costs every other command of the CLI its import time.
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from jobs.email.tracking.suppressions import listing
    from worker.db import migrate
    from worker.db.session import make_engine, make_sessionmaker

    settings = settings_or_exit()
    url = settings.sqlalchemy_url
    engine = None
    try:
        status = migrate.schema_status(url)
        if status.current is None or status.behind:
            die(f"the database has no suppression list yet: {migrate.UPGRADE_HINT}", EXIT_FAILURE)
        engine = make_engine(url)
        with make_sessionmaker(engine)() as session:
            rows = listing(session, reason=args.reason)
    except SQLAlchemyError as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        if isinstance(exc, DBAPIError) and (exc.statement is None or exc.connection_invalidated):
            die(f"the database could not be reached: {first_line}", EXIT_UNAVAILABLE)
        die(f"database error: {first_line}", EXIT_FAILURE)
    finally:
        if engine is not None:
            engine.dispose()
    for row in rows:
        since = row.created_at.isoformat(timespec="seconds").replace("+00:00", "Z")
        if args.json:
            print(
                json.dumps(
                    {
                        "address": row.address,
                        "reason": row.reason,
                        "provider": row.provider,
                        "since": since,
                        "source_event_id": row.source_event_id,
                    }
                )
            )
        else:
            print(f"{row.address:<40}  {row.reason:<9}  {row.provider or '-':<8}  {since}")
    if not rows and not args.json:
        print("no suppressed addresses")
    return EXIT_OK
