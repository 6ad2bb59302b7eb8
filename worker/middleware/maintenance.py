"""Prompt recovery of work held by dead workers, and memory-ceiling recycling.

Dramatiq's Redis broker returns the unacknowledged messages of a dead worker only during a
"maintenance" pass that each command triggers with a small random chance, and it counts a
worker alive only while its consumers issue commands (a consumer busy with long jobs issues
none). Left alone, recovery is unbounded and long jobs can be taken for dead. So each worker
process runs a thread that (1) records its heartbeat every few seconds whatever its consumers
are doing, and (2) runs the maintenance pass on every queue on a fixed interval, so work held
by a worker that vanished is back in its queue within heartbeat timeout + interval.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from dramatiq import Middleware
from dramatiq.brokers.redis import RedisBroker

from worker import metrics
from worker.logging import get_logger

log = get_logger(__name__)


def maintenance_pass(broker: RedisBroker, queues: list[str]) -> None:
    """Run Dramatiq's own maintenance branch of its dispatch script for each queue.

    "noop" matches no command of the script, so only the heartbeat and maintenance run.
    """
    now_ms = int(time.time() * 1000)
    for queue in queues:
        for name in (queue, f"{queue}.DQ"):
            broker.scripts["dispatch"](
                keys=[broker.namespace],
                args=[
                    "noop",
                    now_ms,
                    name,
                    broker.broker_id,
                    broker.heartbeat_timeout,
                    broker.dead_message_ttl,
                    1,
                    broker._max_unpack_size(),
                ],
            )


def rss_mb() -> float:
    """Resident memory of this process, from /proc (Linux)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return 0.0


class Maintenance(Middleware):
    def __init__(
        self,
        *,
        queues: list[str],
        interval_s: float,
        memory_limit_mb: int,
        on_memory_limit: Callable[[], None],
    ) -> None:
        self.queues = queues
        self.interval_s = interval_s
        self.memory_limit_mb = memory_limit_mb
        self.on_memory_limit = on_memory_limit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(broker,), name="maintenance", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._stop.set()

    def _run(self, broker: RedisBroker) -> None:
        recycling = False
        while not self._stop.wait(self.interval_s):
            try:
                maintenance_pass(broker, self.queues)
                metrics.MAINTENANCE_PASSES.inc()
            except Exception as exc:
                log.warning("maintenance.failed", error=str(exc))
            used = rss_mb()
            if not recycling and used > self.memory_limit_mb:
                recycling = True
                metrics.WORKER_RECYCLED.inc()
                log.warning("worker.memory_ceiling", rss_mb=round(used), limit_mb=self.memory_limit_mb)
                self.on_memory_limit()
