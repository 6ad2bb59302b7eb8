"""What `taskmaster-worker status` reports, gathered in a few round trips."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from worker.keys import Keys
from worker.registry import QUEUES


def gather(
    client: redis.Redis, keys: Keys, *, heartbeat_timeout_s: float, lanes: Sequence[str] = ()
) -> dict[str, Any]:
    """``lanes``: the job types with a batch lane (worker/lanes.py), whose backlogs to report."""
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(keys.queue(queue))
        pipe.hlen(keys.queue_messages(f"{queue}.DQ"))
        pipe.zcard(keys.dead_letters(queue))
    pipe.zrangebyscore(keys.heartbeats, int((time.time() - heartbeat_timeout_s) * 1000), "+inf")
    pipe.hgetall(keys.scheduler_status)
    pipe.get(keys.scheduler_leader)
    pipe.xlen(keys.intake)
    pipe.xlen(keys.rejected)
    pipe.xlen(keys.events)
    pipe.zcard(keys.due)
    replies = pipe.execute()
    queues: dict[str, dict[str, int]] = {}
    for index, queue in enumerate(QUEUES):
        ready, delayed, dead = replies[index * 3 : index * 3 + 3]
        queues[queue] = {"ready": int(ready), "delayed": int(delayed), "dead": int(dead)}
    rest = replies[len(QUEUES) * 3 :]
    workers, scheduler, leader, intake_len, rejected_len, events_len, due = rest
    from worker.breaker import breaker_states

    return {
        "breakers": dict(breaker_states(client, keys.prefix)),
        "queues": queues,
        "workers_alive": len(workers),
        "intake": {"length": int(intake_len), **_intake_group(client, keys)},
        "rejected": int(rejected_len),
        "events": int(events_len),
        "held": int(due),
        "scheduler": {k.decode(): v.decode() for k, v in scheduler.items()},
        "scheduler_leader": leader.decode() if leader else None,
        "lanes": {name: _lane(client, keys, name) for name in lanes},
    }


def _lane(client: redis.Redis, keys: Keys, name: str) -> dict[str, int]:
    """Entries waiting in a lane, and those taken by a consumer and not done yet (a done entry
    is deleted, so the stream holds exactly these)."""
    stream = keys.lane(name)
    length = int(client.xlen(stream))
    try:
        pending: Any = client.xpending(stream, keys.lane_group)
    except redis.ResponseError:  # no group yet: nothing was taken
        return {"waiting": length, "pending": 0}
    taken = int(pending["pending"])
    return {"waiting": max(0, length - taken), "pending": taken}


def _intake_group(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Pending (read, unsettled) entries, and how many are not yet read (the intake lag)."""
    try:
        groups = client.xinfo_groups(keys.intake)
    except redis.ResponseError:
        return {"pending": 0, "unread": 0, "group": "not created yet"}
    for group in groups:
        name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
        if name != keys.intake_group:
            continue
        lag = group.get("lag")
        if lag is None:  # Redis < 7 has no lag field: count what follows the last delivered entry
            last = group["last-delivered-id"]
            last = last.decode() if isinstance(last, bytes) else last
            unread: Any = client.xrange(keys.intake, f"({last}", "+", count=10_000)
            lag = len(unread)
        return {"pending": int(group["pending"]), "unread": int(lag)}
    return {"pending": 0, "unread": 0, "group": "not created yet"}
