"""Handing jobs to Dramatiq queues: the one path from intake and the scheduler to the workers.

Dramatiq's Redis broker enqueues with HSET ``<ns>:<queue>.msgs`` and RPUSH ``<ns>:<queue>``.
We write those two keys ourselves, inside one Lua script with the intake acknowledgement and
the idempotency key, because a crash between separate calls would either lose a job (key set,
message not queued) or run it twice (queued, entry not acknowledged). ``tests/test_commit.py``
proves Dramatiq's own workers consume what this writes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import redis

from worker.keys import Keys
from worker.registry import QUEUE_PRIORITY, JobType

_SCRIPT = resources.files("worker").joinpath("commit.lua").read_text()
ENQUEUED, DUPLICATE, REJECTED, GUARDED = 1, 0, 2, 3
Outcome = Literal["enqueued", "duplicate", "overlap"]
_OUTCOMES: dict[int, Outcome] = {ENQUEUED: "enqueued", DUPLICATE: "duplicate", GUARDED: "overlap"}


@dataclass(frozen=True)
class Pending:
    """One record for the commit script: a job to enqueue, or an entry to reject."""

    kind: str  # "job", "lane" or "reject"
    entry: str
    fields: tuple[str | bytes, ...]


def job_fields(
    job_type: JobType[Any], *, job_id: str | None, entry: str | None, submitted_ms: int
) -> dict[str, Any]:
    """Which submitted job a message carries (worker/events.py's JobRef, and its time)."""
    return {"type": job_type.name, "id": job_id, "entry": entry, "submitted_ms": submitted_ms}


def build_message(
    job_type: JobType[Any],
    data: dict[str, Any],
    *,
    queue: str,
    job_id: str | None,
    entry: str | None,
    submitted_ms: int,
    schedule: str | None = None,
) -> tuple[str, str]:
    """Return (redis message id, encoded Dramatiq message) for one job.

    ``schedule`` names the schedules.yaml entry that fired the job, if any.
    """
    message_id = str(uuid.uuid4())
    job = job_fields(job_type, job_id=job_id, entry=entry, submitted_ms=submitted_ms)
    if schedule is not None:
        job["schedule"] = schedule
    options: dict[str, Any] = {"redis_message_id": message_id, "job": job}
    message = {
        "queue_name": queue,
        "actor_name": job_type.actor_name(queue),
        "args": [],
        "kwargs": {"data": data},
        "options": options,
        "message_id": message_id,
        "message_timestamp": int(time.time() * 1000),
    }
    return message_id, json.dumps(message, separators=(",", ":"))


def job_record(
    keys: Keys,
    job_type: JobType[Any],
    data: dict[str, Any],
    *,
    queue: str,
    idempotency_key: str | None,
    job_id: str | None,
    entry: str | None,
    submitted_ms: int,
    schedule: str | None = None,
    guard: tuple[str, float] | None = None,
) -> Pending:
    """A job to enqueue; ``guard`` (key, TTL in seconds) skips it while the key is held, else sets it."""
    if queue not in QUEUE_PRIORITY:
        raise ValueError(f"unknown queue {queue!r}")
    message_id, message = build_message(
        job_type, data, queue=queue, job_id=job_id, entry=entry, submitted_ms=submitted_ms, schedule=schedule
    )
    return Pending(
        "job",
        entry or "",
        (
            keys.idempotency(idempotency_key) if idempotency_key else "",
            keys.queue(queue),
            keys.queue_messages(queue),
            message_id,
            message,
            guard[0] if guard else "",
            str(int(guard[1] * 1000)) if guard else "",
        ),
    )


def lane_record(
    keys: Keys,
    job_type: JobType[Any],
    data: dict[str, Any],
    *,
    idempotency_key: str | None,
    job_id: str | None,
    entry: str,
    submitted_ms: int,
) -> Pending:
    """A job for its type's batch lane (worker/lanes.py) instead of a Dramatiq queue."""
    job = {**job_fields(job_type, job_id=job_id, entry=entry, submitted_ms=submitted_ms), "data": data}
    return Pending(
        "lane",
        entry,
        (
            keys.idempotency(idempotency_key) if idempotency_key else "",
            keys.lane(job_type.name),
            json.dumps(job, separators=(",", ":")),
            "",
            "",
            "",
            "",
        ),
    )


def reject_record(entry: str, job_text: bytes | str, error: str) -> Pending:
    return Pending("reject", entry, (job_text, error, "", "", "", "", ""))


class Committer:
    """Runs the commit script for a batch of records in one round trip."""

    def __init__(self, client: redis.Redis, keys: Keys, *, idempotency_ttl_s: float, rejected_maxlen: int):
        self._script = client.register_script(_SCRIPT)
        self._keys = keys
        self._head = [
            keys.intake,
            keys.intake_group,
            keys.rejected,
            rejected_maxlen,
            int(idempotency_ttl_s * 1000),
        ]

    def commit(self, records: list[Pending]) -> list[int]:
        if not records:
            return []
        args: list[Any] = list(self._head)
        for record in records:
            args.append(record.kind)
            args.append(record.entry)
            args.extend(record.fields)
        return [int(r) for r in self._script(keys=[], args=args)]


# Records of `enqueue` held back by `enqueued_together`, to be committed in one script call.
_held: ContextVar[list[Pending] | None] = ContextVar("_held", default=None)


@contextmanager
def enqueued_together(client: redis.Redis, keys: Keys, *, idempotency_ttl_s: float) -> Iterator[None]:
    """Commit the jobs every `enqueue` inside hands over in one script call, at the end.

    Inside, `enqueue` answers "enqueued" at once; a job whose idempotency key was taken is then
    not enqueued all the same. On an exception inside, nothing held is enqueued.
    """
    records: list[Pending] = []
    token = _held.set(records)
    try:
        yield
    finally:
        _held.reset(token)
    if records:
        Committer(client, keys, idempotency_ttl_s=idempotency_ttl_s, rejected_maxlen=1000).commit(records)


def enqueue(
    client: redis.Redis,
    keys: Keys,
    job_type: JobType[Any],
    data: dict[str, Any],
    *,
    idempotency_key: str | None,
    idempotency_ttl_s: float,
    job_id: str | None = None,
    schedule: str | None = None,
    overlap_guard_ttl_s: float | None = None,
    queue: str | None = None,
) -> Outcome:
    """Enqueue one job outside the intake (the scheduler's fires).

    Returns "enqueued", "duplicate" (the idempotency key was taken) or "overlap". ``data`` must
    already be valid for ``job_type.model``. ``schedule`` names the firing entry: the runtime
    deletes ``keys.schedule_running(schedule)`` when that job finishes (or dies). With
    ``overlap_guard_ttl_s``, that key is checked and set in the same atomic step: while it is
    held the job is not enqueued ("overlap"). ``queue`` overrides the job type's routing (an
    urgent notification's email goes on the urgent queue); the type must declare that queue.
    """
    guard = None
    if overlap_guard_ttl_s is not None:
        if schedule is None:
            raise ValueError("an overlap guard needs the schedule entry's name")
        guard = (keys.schedule_running(schedule), overlap_guard_ttl_s)
    if queue is None:
        queue = job_type.queue_for(job_type.model.model_validate(data))
    elif queue not in job_type.all_queues():
        raise ValueError(f"job type {job_type.name!r} has no actor on the {queue!r} queue")
    record = job_record(
        keys,
        job_type,
        data,
        queue=queue,
        idempotency_key=idempotency_key,
        job_id=job_id,
        entry=None,
        submitted_ms=int(time.time() * 1000),
        schedule=schedule,
        guard=guard,
    )
    held = _held.get()
    if held is not None and guard is None:
        held.append(record)
        return "enqueued"
    committer = Committer(client, keys, idempotency_ttl_s=idempotency_ttl_s, rejected_maxlen=1000)
    return _OUTCOMES[committer.commit([record])[0]]
