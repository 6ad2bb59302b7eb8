"""Prometheus metrics of the runtime (jobs, intake, workers).

Worker processes and the main process each count their own; with several processes the
daemon sets PROMETHEUS_MULTIPROC_DIR before anything imports prometheus_client, and /metrics
adds them up (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

JOBS_ACCEPTED = Counter("taskmaster_jobs_accepted_total", "Jobs accepted at intake", ["type"])
JOBS_REJECTED = Counter("taskmaster_jobs_rejected_total", "Intake entries rejected", ["reason"])
JOBS_DUPLICATE = Counter(
    "taskmaster_jobs_duplicate_total", "Jobs whose id was already accepted (done once)", ["type"]
)
JOBS_PROCESSED = Counter("taskmaster_jobs_processed_total", "Jobs that ran to completion", ["type"])
JOBS_FAILED = Counter("taskmaster_jobs_failed_total", "Job attempts that raised", ["type"])
JOBS_RETRIED = Counter("taskmaster_jobs_retried_total", "Job attempts scheduled again", ["type"])
JOBS_DEAD = Counter("taskmaster_jobs_dead_total", "Jobs moved to the dead letters", ["type"])
START_LATENCY = Histogram(
    "taskmaster_job_start_latency_seconds",
    "From submission (intake entry time) to the start of the first attempt",
    ["queue"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
INTAKE_BATCH = Histogram(
    "taskmaster_intake_batch_entries",
    "Entries handled per intake round trip",
    buckets=(1, 10, 50, 100, 200, 500),
)
INTAKE_CLAIMED = Counter(
    "taskmaster_intake_claimed_total", "Entries claimed again from a consumer that stopped"
)
WORKER_RECYCLED = Counter(
    "taskmaster_worker_recycled_total", "Worker processes recycled for passing the memory ceiling"
)
MAINTENANCE_PASSES = Counter(
    "taskmaster_maintenance_passes_total", "Maintenance passes returning dead workers' messages"
)


class StateCollector:
    """Gauges read from Redis at scrape time: queue depths, dead letters, intake lag, workers."""

    def __init__(self, gather: Callable[[], dict[str, Any]]) -> None:
        self._gather = gather

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("taskmaster_redis_up", "1 when Redis answered this scrape")
        try:
            state = self._gather()
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily(
            "taskmaster_queue_depth",
            "Messages per queue: ready, delayed (retries) and dead",
            labels=["queue", "state"],
        )
        for queue, counts in state["queues"].items():
            for kind, value in counts.items():
                depth.add_metric([queue, kind], value)
        yield depth
        intake = GaugeMetricFamily(
            "taskmaster_intake_entries", "Intake entries unread or being settled", labels=["state"]
        )
        intake.add_metric(["unread"], state["intake"]["unread"])
        intake.add_metric(["pending"], state["intake"]["pending"])
        yield intake
        lanes = GaugeMetricFamily(
            "taskmaster_lane_entries",
            "Jobs in a batch lane: waiting, or taken and not done yet",
            labels=["lane", "state"],
        )
        for lane, counts in state.get("lanes", {}).items():
            for kind, value in counts.items():
                lanes.add_metric([lane, kind], value)
        yield lanes
        yield GaugeMetricFamily(
            "taskmaster_held_jobs", "Jobs held in Redis until their due time", value=state["held"]
        )
        yield GaugeMetricFamily(
            "taskmaster_workers_alive",
            "Worker processes with a recent heartbeat",
            value=state["workers_alive"],
        )
