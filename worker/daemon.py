"""`taskmaster-worker run`: one supervised process tree (DESIGN.md, Processes).

The main process serves HTTP, reads the intake and runs the scheduler (by role), and supervises
the worker processes. Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads schedules.yaml.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.errors import ConfigError, SchemaBehind
from worker.logging import get_logger
from worker.registry import load_checked
from worker.runtime import Runtime, settle_heap
from worker.settings import Settings

log = get_logger(__name__)

ROLES = ("all", "intake", "worker", "scheduler")
# A worker process exits with this status to ask for a fresh one (worker/process.py).
EXIT_RECYCLE = 75
RESTART_DELAY_S = 1.0


@dataclass
class WorkerProcesses:
    """Starts N worker processes (and ``lanes`` processes of batch lanes alone, worker/lanes.py)
    and starts a new one when one exits unasked."""

    count: int
    threads: int
    env: dict[str, str]
    lanes: int = 0
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stopping: bool = False

    @property
    def commands(self) -> list[list[str]]:
        worker = [sys.executable, "-m", "worker.process", str(self.threads)]
        lanes = [sys.executable, "-m", "worker.process", "--lanes"]
        return [worker] * self.count + [lanes] * self.lanes

    def start(self) -> None:
        self.children = [self._spawn(index) for index in range(len(self.commands))]

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.commands[index], env=self.env, stdin=subprocess.DEVNULL)

    def check(self) -> None:
        for index, child in enumerate(self.children):
            code = child.poll()
            if code is None or self.stopping:
                continue
            if code == EXIT_RECYCLE:
                log.info("worker.recycled", pid=child.pid)
            else:
                log.error("worker.exited", pid=child.pid, status=code)
                time.sleep(RESTART_DELAY_S)
            self.children[index] = self._spawn(index)

    def alive(self) -> int:
        return sum(1 for child in self.children if child.poll() is None)

    def stop(self, timeout_s: float) -> None:
        self.stopping = True
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker.killed", pid=child.pid)
                child.kill()
                child.wait()


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        role: str = "all",
        processes: int | None = None,
        threads: int | None = None,
        environ: Mapping[str, str],
    ) -> None:
        if role not in ROLES:
            raise ConfigError(f"--role: unknown role {role!r}; use one of {', '.join(ROLES)}")
        self.settings = settings
        self.role = role
        self.processes = processes or settings.processes
        self.threads = threads or settings.threads
        self.environ = dict(environ)
        self.stop_event = threading.Event()
        self.reload_event = threading.Event()
        self.embedded: Any = None
        self.started_embedded = False
        self.runtime: Runtime | None = None
        self.intake: Any = None
        self.scheduler: Any = None
        self.http: Any = None
        self.workers: WorkerProcesses | None = None
        self.threads_running: list[threading.Thread] = []
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"

    # Start-up -------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Everything that can fail on configuration, before anything starts."""
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        registry = load_checked(settings, schedule=self.role in ("all", "scheduler"))
        self._prepare_database()
        if settings.embedded_redis:
            from worker.embedded_redis import EmbeddedRedis

            self.embedded = EmbeddedRedis(settings.data_dir)
            self.embedded.ensure_running()
            # The first daemon on the data dir owns the server and stops it when it stops.
            self.started_embedded = self.embedded.claim(os.getpid())
        self.runtime = Runtime(settings, registry)

    def _prepare_database(self) -> None:
        """Upgrade the embedded SQLite, or check a configured database is not behind.

        Done in a forked child: Alembic would cost the long-lived main process ~11 MB it never
        gives back, for work done once at start.
        """
        from worker.db import forked

        url = self.settings.sqlalchemy_url
        try:
            forked.run("upgrade" if self.settings.embedded_database else "check", url)
        except SchemaBehind as exc:
            raise ConfigError(str(exc)) from exc

    def start(self) -> None:
        assert self.runtime is not None
        runtime = self.runtime
        from worker.breaker import breaker_states
        from worker.breaker.metrics import BreakerStateCollector
        from worker.http import HttpServer
        from worker.metrics import StateCollector
        from worker.status import gather

        host, port = self.settings.http_host_port
        state = StateCollector(
            lambda: gather(
                runtime.redis,
                runtime.keys,
                heartbeat_timeout_s=self.settings.worker_heartbeat_timeout,
                lanes=runtime.registry.lanes(),
            )
        )
        self.http = HttpServer(
            host,
            port,
            ready=self.readiness,
            multiproc_dir=self.environ.get("PROMETHEUS_MULTIPROC_DIR"),
            collectors=[
                state,
                BreakerStateCollector(lambda: breaker_states(runtime.redis, runtime.keys.prefix)),
            ],
        )
        self.http.start()
        if self.role in ("all", "intake"):
            from worker.intake import Intake

            self.intake = Intake(runtime, self.consumer)
            self._thread("intake", self.intake.run, self.stop_event)
            from worker.due import DueStore, run_releaser

            self._thread("due-releaser", run_releaser, DueStore(runtime.redis, runtime.keys), self.stop_event)
        if self.role in ("all", "scheduler"):
            from worker.scheduler.service import Scheduler

            self.scheduler = Scheduler(runtime, self.settings.schedules_file)
            self.scheduler.start()
        if self.role in ("all", "worker"):
            # No lanes process where no job type has a lane (TASKMASTER_JOB_MODULES without
            # notifications): it would have nothing to do.
            lanes = self.settings.lane_processes if runtime.registry.lanes() else 0
            self.workers = WorkerProcesses(self.processes, self.threads, self.environ, lanes=lanes)
            self.workers.start()
        settle_heap()
        log.info(
            "daemon.started",
            role=self.role,
            processes=self.processes if self.workers else 0,
            threads=self.threads,
            lane_processes=self.workers.lanes if self.workers else 0,
            http=f"{self.http.address[0]}:{self.http.address[1]}",
            redis="embedded" if self.settings.embedded_redis else "configured",
        )

    def _thread(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads_running.append(thread)

    # Health -----------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, str] = {}
        assert self.runtime is not None
        try:
            self.runtime.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unavailable: {type(exc).__name__}"
        try:
            from sqlalchemy import text

            with self.runtime.db.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        if self.workers is not None:
            alive = self.workers.alive()
            checks["workers"] = "ok" if alive else "none running"
        ready = all(value == "ok" for value in checks.values())
        return ready, checks

    # Running ----------------------------------------------------------------------------------

    def run_forever(self, notifier: Any) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGINT, lambda *_: self.stop_event.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_event.set())
        notifier.ready(f"running: role {self.role}")
        interval = notifier.watchdog_interval_s
        next_ping = 0.0
        while not self.stop_event.wait(0.2):
            if self.reload_event.is_set():
                self.reload_event.clear()
                notifier.reloading()
                if self.scheduler is not None:
                    self.scheduler.reload()
                notifier.ready("reloaded")
            if self.workers is not None:
                self.workers.check()
            now = time.monotonic()
            if interval is not None and now >= next_ping:
                next_ping = now + interval
                if all(t.is_alive() for t in self.threads_running):
                    notifier.watchdog()
        notifier.stopping()
        self.shutdown()
        return 0

    def shutdown(self) -> None:
        log.info("daemon.stopping", timeout_s=self.settings.shutdown_timeout)
        self.stop_event.set()
        if self.scheduler is not None:
            self.scheduler.stop()
        for thread in self.threads_running:
            thread.join(timeout=5)
        if self.workers is not None:
            self.workers.stop(self.settings.shutdown_timeout)
        if self.http is not None:
            self.http.stop()
        if self.runtime is not None:
            self.runtime.close()
        if self.started_embedded and self.embedded is not None:
            self.embedded.shutdown()
        log.info("daemon.stopped")
