"""One worker process: a Dramatiq worker running the actors of every job type, or (``--lanes``)
the consumers of the batch lanes alone (worker/lanes.py).

Started by the daemon (worker/daemon.py) as ``python -m worker.process THREADS`` or
``python -m worker.process --lanes``; it reads the same settings from the environment it
inherits. SIGTERM: stop fetching, finish or return what is in flight within
TASKMASTER_SHUTDOWN_TIMEOUT, exit 0. Exit status 75 asks the daemon for a fresh
process (the memory ceiling was passed); the daemon starts one.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

from dramatiq import Worker

from worker.broker import build_broker
from worker.daemon import EXIT_RECYCLE
from worker.errors import ConfigError
from worker.lanes import LaneThreads
from worker.logging import configure_logging, get_logger
from worker.registry import load_job_modules
from worker.runtime import Runtime, settle_heap
from worker.settings import load_settings

_PR_SET_PDEATHSIG = 1

log = get_logger(__name__)


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the daemon dies, even by SIGKILL, so no worker is orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def main(threads: int, *, lanes_only: bool = False) -> int:
    _die_with_parent()
    parent = os.getppid()
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"taskmaster-worker: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    runtime = Runtime(settings, load_job_modules(settings.job_modules))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if lanes_only:
        return _run_lanes(runtime, stop, parent)
    recycle = threading.Event()

    def on_memory_limit() -> None:
        recycle.set()
        stop.set()

    broker = build_broker(runtime, on_memory_limit=on_memory_limit, lanes=settings.lane_processes == 0)
    worker = Worker(broker, worker_threads=threads, worker_timeout=100)
    settle_heap()
    worker.start()
    log.info("worker.started", pid=os.getpid(), threads=threads)
    while not stop.wait(1.0):
        if os.getppid() != parent:  # the daemon vanished and no death signal came
            break
    log.info("worker.stopping", pid=os.getpid(), recycle=recycle.is_set())
    worker.stop(timeout=int(settings.shutdown_timeout * 1000))
    broker.close()
    runtime.close()
    return EXIT_RECYCLE if recycle.is_set() else 0


def _run_lanes(runtime: Runtime, stop: threading.Event, parent: int) -> int:
    """Take the batch lanes until SIGTERM; a batch in hand is finished first."""
    lanes = LaneThreads(runtime)
    settle_heap()
    lanes.start()
    log.info("lanes.started", pid=os.getpid())
    while not stop.wait(1.0):
        if os.getppid() != parent:
            break
        if not lanes.alive():  # never expected (each loop catches everything): ask for a new one
            log.error("lanes.thread_died", pid=os.getpid())
            return 1
    log.info("lanes.stopping", pid=os.getpid())
    lanes.stop(timeout_s=runtime.settings.shutdown_timeout)
    runtime.close()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--lanes"]:
        sys.exit(main(0, lanes_only=True))
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8))
