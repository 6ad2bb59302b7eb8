"""The scheduler's Prometheus metrics (served on /metrics by the daemon's http part).

Labels are entry names from schedules.yaml, a small and operator-chosen set.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

FIRES = Counter(
    "taskmaster_scheduler_fires_total",
    "Scheduled fires enqueued, by schedules.yaml entry.",
    ["entry"],
)
FIRE_LAG = Histogram(
    "taskmaster_scheduler_fire_lag_seconds",
    "Seconds from a fire's due time (scheduled time plus jitter) to its enqueue.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
MISSED = Counter(
    "taskmaster_scheduler_missed_fires_total",
    "Fires not run, by entry and reason: catchup (dropped by the entry's catchup policy),"
    " misfire (later than misfire_grace), overlap (the previous run was still queued or running).",
    ["entry", "reason"],
)
DUPLICATES = Counter(
    "taskmaster_scheduler_duplicates_total",
    "Fires whose idempotency key was already taken (fired before, by this or another daemon).",
    ["entry"],
)
LEADER_CHANGES = Counter(
    "taskmaster_scheduler_leader_changes_total",
    "Times this process became the scheduler leader.",
)
RELOAD_ERRORS = Counter(
    "taskmaster_scheduler_reload_errors_total",
    "Reloads of schedules.yaml refused because the file was invalid.",
)
ENQUEUE_RETRIES = Counter(
    "taskmaster_scheduler_enqueue_retries_total",
    "Fires that could not be enqueued (Redis unavailable) and will be tried again, by entry.",
    ["entry"],
)
