"""One fire of one entry: the overlap guard, the enqueue, the metrics.

The idempotency key ``fire:<entry>:<scheduled time>`` makes a fire run once even when two
daemons both believe they lead, or a new leader catches up a fire its predecessor had sent.

Overlap ``skip``: the fire is enqueued only if ``keys.schedule_running(entry)`` is free, and
sets it, in the same atomic step as the enqueue (worker/commit.lua); the job carries
``schedule=<entry>`` and the runtime's worker middleware deletes the key when the job finishes
or dies. The TTL is the job's time limit plus RUNNING_MARGIN_S, so a marker whose job vanished
(a worker killed, its message recovered later) blocks the entry for at most that long.
``allow`` entries set no marker.
"""

from __future__ import annotations

from datetime import UTC, datetime

from worker.logging import get_logger
from worker.runtime import Runtime
from worker.scheduler import metrics
from worker.scheduler.entry import Entry
from worker.scheduler.planner import Fire
from worker.scheduler.state import SchedulerStore
from worker.scheduler.timing import iso
from worker.submit import Outcome, enqueue

log = get_logger(__name__)

# A run waiting in its queue counts as running too: the marker outlives the time limit by this.
RUNNING_MARGIN_S = 300.0


def idempotency_key(entry: str, scheduled: datetime) -> str:
    return f"fire:{entry}:{iso(scheduled)}"


class Firer:
    def __init__(self, runtime: Runtime, store: SchedulerStore) -> None:
        self._runtime = runtime
        self._store = store

    def fire(self, entry: Entry, fire: Fire) -> Outcome:
        """Enqueue one fire. Raises redis.RedisError when Redis is away (the caller retries)."""
        runtime = self._runtime
        job_type = runtime.registry.get(entry.job)
        if job_type is None:  # validated at load; the registry does not shrink while running
            raise LookupError(f"job {entry.job!r} of entry {entry.name!r} is not registered")
        scheduled = iso(fire.scheduled)
        guard_ttl_s = None
        if entry.overlap == "skip":
            guard_ttl_s = (job_type.time_limit_s or runtime.settings.job_time_limit) + RUNNING_MARGIN_S
        outcome = enqueue(
            runtime.redis,
            runtime.keys,
            job_type,
            entry.data,
            idempotency_key=idempotency_key(entry.name, fire.scheduled),
            idempotency_ttl_s=runtime.settings.idempotency_ttl,
            schedule=entry.name,
            overlap_guard_ttl_s=guard_ttl_s,
        )
        if outcome == "overlap":
            metrics.MISSED.labels(entry.name, "overlap").inc()
            log.info(
                "fire skipped: the previous run is still queued or running",
                entry=entry.name,
                scheduled=scheduled,
            )
            return "overlap"
        if outcome == "duplicate":
            metrics.DUPLICATES.labels(entry.name).inc()
            log.info("fire already enqueued before", entry=entry.name, scheduled=scheduled)
            return "duplicate"
        lag_s = max(0.0, (datetime.now(UTC) - fire.due).total_seconds())
        metrics.FIRES.labels(entry.name).inc()
        metrics.FIRE_LAG.observe(lag_s)
        log.info("fired", entry=entry.name, job=entry.job, scheduled=scheduled, lag_s=round(lag_s, 3))
        return "enqueued"
