"""Batch lanes: jobs of one type taken many at a time, for types whose work shares round trips.

Most jobs go to Dramatiq, one message each. A type with a batch handler (``@job(...,
batch=...)``, today `notification.send`) has a lane: the intake appends its default-queue jobs
to the stream ``<prefix>:lane:<type>`` (in its commit script, with the idempotency key), and a
thread in each lanes process (TASKMASTER_LANE_PROCESSES; with 0, in each worker process) reads
up to ``BATCH`` entries at a time through a consumer group and hands them to the handler
together. Under load the batches grow by themselves (what waited
while the previous batch ran); idle, a job is taken as soon as it arrives.

Dramatiq handles one message per worker thread: its per-message costs (fetch and ack scripts,
middleware) and the job's own round trips, paid a thousand times a second, cost more than the
work. Dramatiq has no batch consumer (Celery has one, as the celery-batches package, for
Celery's own workers), hence this module; Redis streams give what a lane needs: consumer
groups, acknowledgement, and the pending entries of a consumer that died.

What a batch does not finish stays pending in the group: a consumer that stops, or dies, leaves
its entries to be claimed (XAUTOCLAIM) by another once idle for ``CLAIM_IDLE_S``; the handlers
are idempotent per job, so a job done again does nothing twice. A job the handler hands back
(its prerequisite is not there yet), and every job of a batch whose handler raised, goes to
Dramatiq as a message of its own, with the retries and dead letters of any job.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import redis
from dramatiq import Middleware

from worker import metrics
from worker.events import JobRef
from worker.logging import get_logger
from worker.streams import forget_idle_consumers, linger_after
from worker.submit import Committer, Pending, job_record

if TYPE_CHECKING:
    from worker.registry import JobType
    from worker.runtime import Runtime

log = get_logger(__name__)

# Entries taken at most per batch: bounds a batch's time, so each job's decision latency
# (measured: 64 gave 1,000/s with a decision p99 of 74-99 ms, 32 the same rate and 24 ms, 16
# 871/s and 18 ms).
BATCH = 32
# A pending entry idle this long belongs to a consumer that stopped or died: another takes it.
CLAIM_IDLE_S = 30.0
CLAIM_INTERVAL_S = 5.0
BLOCK_MS = 500


@dataclass(frozen=True, slots=True)
class LaneJob:
    """One job taken from a lane."""

    job: JobRef
    data: Any  # the job type's model, validated
    submitted_ms: int

    @property
    def idempotency_key(self) -> str:
        """The same key as the job's JobContext would give it (worker/context.py)."""
        return f"id:{self.job.id}" if self.job.id is not None else f"entry:{self.job.entry}"


class Lane:
    """The consumer of one job type's lane in this process."""

    def __init__(self, runtime: Runtime, job_type: JobType[Any], consumer: str) -> None:
        assert job_type.batch is not None
        self.runtime = runtime
        self.job_type = job_type
        self.handler = job_type.batch
        self.consumer = consumer
        self.stream = runtime.keys.lane(job_type.name)
        self.group = runtime.keys.lane_group
        self._context = {"settings": runtime.settings, "stage": "worker"}
        self._next_claim = 0.0
        self._committer = Committer(
            runtime.redis,
            runtime.keys,
            idempotency_ttl_s=runtime.settings.idempotency_ttl,
            rejected_maxlen=runtime.settings.rejected_maxlen,
        )

    def ensure_group(self) -> None:
        try:
            self.runtime.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def poll_once(self, block_ms: int = BLOCK_MS) -> int:
        """Take one batch of new entries and do it; return how many entries were handled."""
        reply: Any = self.runtime.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=BATCH, block=block_ms
        )
        handled = 0
        for _stream, entries in reply or []:
            handled += self.handle(entries)
        return handled

    def claim_stale(self) -> int:
        """Take over entries another consumer read and never finished."""
        start: Any = "0-0"
        handled = 0
        while True:
            reply: Any = self.runtime.redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=int(CLAIM_IDLE_S * 1000),
                start_id=start,
                count=BATCH,
            )
            start, entries = reply[0], reply[1]
            if entries:
                log.warning("lane.claimed", lane=self.job_type.name, entries=len(entries))
                handled += self.handle(entries)
            if start in (b"0-0", "0-0"):
                return handled

    def handle(self, entries: Sequence[tuple[bytes, dict[bytes, bytes] | None]]) -> int:
        """Do one batch; acknowledge (and delete) its entries once done or handed over."""
        jobs: list[LaneJob] = []
        unreadable: list[Pending] = []
        now = time.time()
        for raw_id, fields in entries:
            stream_id = raw_id.decode()
            raw = (fields or {}).get(b"job")
            if raw is None:  # deleted meanwhile (an entry claimed from Redis 6.2 answers so)
                continue
            try:
                jobs.append(self._parse(raw))
            except Exception as exc:
                # The intake validated it: only a model changed by an upgrade between intake
                # and here gets here. Dramatiq's path reports it and keeps it as a dead letter.
                log.error("lane.unreadable", lane=self.job_type.name, entry=stream_id, error=str(exc))
                unreadable.append(self._unreadable_record(raw))
        for job in jobs:
            metrics.START_LATENCY.labels("lane").observe(max(0.0, now - job.submitted_ms / 1000))
        retry: list[LaneJob] = []
        if jobs:
            try:
                retry = self.handler(self.runtime, jobs)
            except Exception:
                log.exception("lane.batch_failed", lane=self.job_type.name, jobs=len(jobs))
                metrics.JOBS_FAILED.labels(self.job_type.name).inc(len(jobs))
                retry = jobs
        records = [self._record(j.data.model_dump(mode="json"), j.job, j.submitted_ms) for j in retry]
        if records or unreadable:
            self._committer.commit([*records, *unreadable])
            log.info("lane.handed_to_queue", lane=self.job_type.name, jobs=len(records) + len(unreadable))
        metrics.JOBS_PROCESSED.labels(self.job_type.name).inc(len(jobs) - len(retry))
        ids = [raw_id for raw_id, _ in entries]
        pipe = self.runtime.redis.pipeline(transaction=True)
        pipe.xack(self.stream, self.group, *ids)
        pipe.xdel(self.stream, *ids)
        pipe.execute()
        return len(entries)

    def _parse(self, raw: bytes) -> LaneJob:
        job = json.loads(raw)
        return LaneJob(
            job=JobRef(type=job["type"], id=job.get("id"), entry=job.get("entry")),
            data=self.job_type.model.model_validate(job["data"], context=self._context),
            submitted_ms=int(job["submitted_ms"]),
        )

    def _unreadable_record(self, raw: bytes) -> Pending:
        try:
            body = json.loads(raw)
            ref = JobRef(type=self.job_type.name, id=body.get("id"), entry=body.get("entry"))
            return self._record(dict(body.get("data") or {}), ref, int(body.get("submitted_ms") or 0))
        except (ValueError, TypeError, AttributeError) as exc:
            return Pending("reject", "", (raw, f"lane entry unreadable: {exc}", "", "", "", "", ""))

    def _record(self, data: dict[str, Any], ref: JobRef, submitted_ms: int) -> Pending:
        """A Dramatiq message of its own on the type's queue. No idempotency key (the intake
        took it) and no intake entry to acknowledge (the intake did): the message names its
        entry, the record none."""
        record = job_record(
            self.runtime.keys,
            self.job_type,
            data,
            queue=self.job_type.queue,
            idempotency_key=None,
            job_id=ref.id,
            entry=ref.entry,
            submitted_ms=submitted_ms,
        )
        return replace(record, entry="")

    def run(self, stop: threading.Event) -> None:
        """Take batches until ``stop`` is set; wait out Redis outages with backoff."""
        backoff_s = 0.1
        healthy = False
        while not stop.is_set():
            try:
                if not healthy:
                    self.ensure_group()
                    healthy = True
                    backoff_s = 0.1
                now = time.monotonic()
                if now >= self._next_claim:
                    self._next_claim = now + CLAIM_INTERVAL_S
                    self.claim_stale()
                    forget_idle_consumers(self.runtime.redis, self.stream, self.group, keep=self.consumer)
                linger_after(self.poll_once(), stop)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if healthy:
                    log.warning("lane.redis_unavailable", lane=self.job_type.name, error=str(exc))
                healthy = False
                stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
            except Exception as exc:
                # NOGROUP after Redis lost its data, or a bug: never let the thread die.
                log.exception("lane.error", lane=self.job_type.name, error=str(exc))
                healthy = False
                stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)


class LaneThreads:
    """A consumer thread per lane of the registry, in this process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        consumer = f"{socket.gethostname()}-{os.getpid()}"
        for job_type in self.runtime.registry.all():
            if job_type.batch is None:
                continue
            lane = Lane(self.runtime, job_type, consumer)
            thread = threading.Thread(
                target=lane.run, args=(self._stop,), name=f"lane-{job_type.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self._threads)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batches in hand; entries read and not done stay pending for another."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=timeout_s)
        self._threads = []


class Lanes(Middleware):
    """Runs the lanes in every Dramatiq worker of the broker (where no process of lanes alone
    does: TASKMASTER_LANE_PROCESSES=0, and tests' in-process workers)."""

    def __init__(self, runtime: Runtime) -> None:
        self._threads = LaneThreads(runtime)

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._threads.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._threads.stop()
