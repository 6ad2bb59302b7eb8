"""`taskmaster-worker config`: the effective configuration, secrets masked."""

from __future__ import annotations

import argparse
from typing import Any

from worker.cli.common import EXIT_CONFIG, EXIT_OK, die, settings_or_exit


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "config",
        help="print the effective configuration (secrets masked)",
        description="Print every setting as the daemon sees it, secrets masked. With --check, only"
        " validate the configuration, job modules and schedules file (exit 2 when invalid).",
    )
    parser.add_argument("--check", action="store_true", help="validate only; for systemd's ExecStartPre")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from worker.errors import ConfigError
    from worker.registry import load_checked
    from worker.settings import masked

    settings = settings_or_exit()
    try:
        load_checked(settings)
    except ConfigError as exc:
        die(str(exc), EXIT_CONFIG)
    if args.check:
        print("configuration ok")
        return EXIT_OK
    for name, value in masked(settings).items():
        print(f"{name}={value}")
    return EXIT_OK
