"""Entry point of the `taskmaster-worker` console script."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from worker import __version__

# Each module defines register(subparsers); its parsers set `func(args) -> int`.
COMMAND_MODULES = (
    "worker.cli.run",
    "worker.cli.enqueue",
    "worker.cli.status",
    "worker.cli.config",
    "worker.cli.schema",
    "worker.cli.schedules",
    "worker.cli.db",
    "worker.cli.dlq",
)

EPILOG = """\
examples:
  taskmaster-worker run
  taskmaster-worker enqueue email.send '{"to": "a@example.com", "subject": "Hi", "text": "Hello"}'
  taskmaster-worker status
  taskmaster-worker schedules list

exit status:
  0  success
  1  failure (a command that could not do what was asked)
  2  invalid configuration or schedules file (restarting will not help)
  3  Redis or the database could not be reached
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskmaster-worker",
        description="The external-integration daemon of TaskMaster Pro.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    _capability_commands(subparsers)
    return parser


def _capability_commands(subparsers: Any) -> None:
    """Commands of the capabilities named by TASKMASTER_JOB_MODULES (`templates`, ...)."""
    from worker.errors import ConfigError
    from worker.registry import load_job_modules
    from worker.settings import load_settings

    try:
        modules = load_settings().job_modules
    except ConfigError:
        return  # the command itself reports the configuration error, with exit status 2
    try:
        registry = load_job_modules(modules)
    except ConfigError:
        return
    registry.register_commands(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["run"] and "prometheus_client" not in sys.modules:
        from worker.cli.run import prepare_metrics_dir

        prepare_metrics_dir()
    parser = build_parser()
    args = parser.parse_args(arguments)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
