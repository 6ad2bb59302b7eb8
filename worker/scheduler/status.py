"""The scheduler's status hash (``keys.scheduler_status``), for `taskmaster-worker status`.

Written by the leader whenever something in it changes and at least every 5 s:

- ``leader``: the leader's id (``host:pid:random``). It is also the value of
  ``keys.scheduler_leader`` while the lock is held: compare the two to tell a live leader from
  the status of one that died.
- ``leader_since``: ISO 8601 UTC time it became leader; ``updated_at``: when it last wrote.
- ``source``: the schedules file in use (``worker/scheduler/default.yaml`` when the configured
  file does not exist); ``loaded_at``: when it was last loaded.
- ``next:<entry>``: JSON array of the entry's next three scheduled times (ISO 8601 UTC, before
  jitter); ``[]`` for a disabled entry.
- ``reload_error``, ``reload_error_at``: the message and time of the last refused reload,
  written by whichever daemon (leader or standby) refused it and removed by a good reload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis

from worker.keys import Keys
from worker.scheduler.timing import iso, next_fire_times

if TYPE_CHECKING:
    from worker.scheduler.service import Scheduler

NEXT_PREFIX = "next:"
NEXT_COUNT = 3


def status_fields(scheduler: Scheduler, settled: dict[str, datetime]) -> dict[str, str]:
    """The leader's fields; ``settled`` gives each enabled entry's settled time."""
    now = datetime.now(UTC)
    fields = {
        "leader": scheduler.leader_id,
        "leader_since": iso(scheduler.leading_since or now),
        "source": scheduler.schedule.source,
        "loaded_at": iso(scheduler.loaded_at),
    }
    for name, entry in scheduler.schedule.entries.items():
        times: list[str] = []
        if entry.enabled:
            after = settled.get(name, now)
            times = [iso(t) for t in next_fire_times(entry.trigger, after, NEXT_COUNT)]
        fields[NEXT_PREFIX + name] = json.dumps(times)
    return fields


@dataclass
class SchedulerStatus:
    """What `status` shows about the scheduler."""

    leader: str | None = None
    live: bool = False  # the lock is held by that leader right now
    leader_since: str | None = None
    updated_at: str | None = None
    source: str | None = None
    next_fires: dict[str, list[str]] = field(default_factory=dict)
    reload_error: str | None = None


def read_status(client: redis.Redis, keys: Keys) -> SchedulerStatus:
    """Read the status hash and the lock. Raises redis.RedisError."""
    raw: dict[Any, Any] = client.hgetall(keys.scheduler_status)
    values = {_text(k): _text(v) for k, v in raw.items()}
    holder = client.get(keys.scheduler_leader)
    status = SchedulerStatus(
        leader=values.get("leader"),
        leader_since=values.get("leader_since"),
        updated_at=values.get("updated_at"),
        source=values.get("source"),
        reload_error=values.get("reload_error"),
    )
    status.live = holder is not None and _text(holder) == status.leader
    for name, value in sorted(values.items()):
        if name.startswith(NEXT_PREFIX):
            try:
                status.next_fires[name[len(NEXT_PREFIX) :]] = list(json.loads(value))
            except ValueError:
                continue
    return status


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
