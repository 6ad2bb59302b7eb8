"""`taskmaster-worker run`: start the daemon."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from worker.cli.common import EXIT_CONFIG, EXIT_UNAVAILABLE, die, settings_or_exit


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the daemon (intake, workers, scheduler, http)",
        description="Run the daemon. With no configuration it uses an embedded Redis and SQLite"
        " in TASKMASTER_DATA_DIR and writes email to its outbox/ folder.",
        epilog="examples:\n  taskmaster-worker run\n  taskmaster-worker run --role worker --processes 4\n"
        "signals: SIGTERM drains and exits 0; SIGHUP reloads schedules.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--role", default="all", choices=("all", "intake", "worker", "scheduler"))
    parser.add_argument("--processes", type=int, help="worker processes (default TASKMASTER_PROCESSES)")
    parser.add_argument("--threads", type=int, help="threads per worker process (default TASKMASTER_THREADS)")
    parser.set_defaults(func=run)


def prepare_metrics_dir() -> None:
    """Point every process of the tree at one metrics directory, before prometheus_client loads.

    prometheus_client chooses where values live when it is first imported, so this runs before
    the command modules are imported (worker/cli/main.py); /metrics then adds the processes up.
    """
    settings = settings_or_exit()
    metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.data_dir / "metrics")))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):  # counts of a previous run of the daemon
        stale.unlink()


def run(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    from worker.daemon import Daemon
    from worker.errors import ConfigError, DatabaseUnavailable, RedisUnavailable
    from worker.sdnotify import Notifier

    try:
        daemon = Daemon(
            settings, role=args.role, processes=args.processes, threads=args.threads, environ=os.environ
        )
        daemon.prepare()
    except ConfigError as exc:
        die(str(exc), EXIT_CONFIG)
    except (RedisUnavailable, DatabaseUnavailable) as exc:
        die(str(exc), EXIT_UNAVAILABLE)
    daemon.start()
    return daemon.run_forever(Notifier(os.environ))
