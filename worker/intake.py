"""The intake: reads the host's jobs from ``<prefix>:intake`` and hands them to the workers.

A consumer group reads the stream from its start, so jobs added before any daemon ran are
done too. Each batch is validated here, then settled in one Lua call (worker/commit.lua):
valid jobs enqueued and acknowledged, duplicates acknowledged, bad ones moved to the rejected
stream. Entries read by a daemon that died before settling them stay pending in the group;
XAUTOCLAIM hands them to a live daemon once idle for TASKMASTER_INTAKE_CLAIM_IDLE.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import redis

from worker import metrics
from worker.logging import get_logger
from worker.runtime import Runtime
from worker.streams import forget_idle_consumers, linger_after
from worker.submit import DUPLICATE, REJECTED, Committer, Pending, job_record, lane_record, reject_record
from worker.validation import Rejection, validate_entry

log = get_logger(__name__)

CLAIM_INTERVAL_S = 5.0


class Intake:
    def __init__(self, runtime: Runtime, consumer: str) -> None:
        self.runtime = runtime
        self.consumer = consumer
        settings = runtime.settings
        self.keys = runtime.keys
        self.committer = Committer(
            runtime.redis,
            runtime.keys,
            idempotency_ttl_s=settings.idempotency_ttl,
            rejected_maxlen=settings.rejected_maxlen,
        )
        self._claim_idle_ms = int(settings.intake_claim_idle * 1000)
        self._context = {"settings": settings, "stage": "intake"}
        self._next_claim = 0.0
        self.healthy = False

    def ensure_group(self) -> None:
        try:
            self.runtime.redis.xgroup_create(self.keys.intake, self.keys.intake_group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def poll_once(self, block_ms: int = 1000) -> int:
        """Read and settle one batch of new entries; return how many were handled."""
        batch = self.runtime.settings.intake_batch
        reply: Any = self.runtime.redis.xreadgroup(
            self.keys.intake_group,
            self.consumer,
            {self.keys.intake: ">"},
            count=batch,
            block=block_ms,
        )
        handled = 0
        for _stream, entries in reply or []:
            handled += self.settle(entries)
        return handled

    def claim_stale(self) -> int:
        """Take over entries that another consumer read but never settled."""
        client = self.runtime.redis
        start: Any = "0-0"
        handled = 0
        while True:
            reply: Any = client.xautoclaim(
                self.keys.intake,
                self.keys.intake_group,
                self.consumer,
                min_idle_time=self._claim_idle_ms,
                start_id=start,
                count=self.runtime.settings.intake_batch,
            )
            start, entries = reply[0], reply[1]
            # Redis 6.2 answers deleted entries as (id, None); 7 lists them apart: either way
            # they carry no job and are settled as rejected "missing_job" below.
            if entries:
                metrics.INTAKE_CLAIMED.inc(len(entries))
                log.warning("intake.claimed", entries=len(entries))
                handled += self.settle(entries)
            if start in (b"0-0", "0-0"):
                return handled

    def trim_settled(self) -> int:
        """Delete the entries every consumer has settled, so the stream does not grow forever.

        What stays: entries still pending (read, not settled) and entries not yet read. XTRIM
        MINID removes every entry below the oldest of those.
        """
        client = self.runtime.redis
        summary: Any = client.xpending(self.keys.intake, self.keys.intake_group)
        groups: Any = client.xinfo_groups(self.keys.intake)
        last = next(
            (g["last-delivered-id"] for g in groups if _text(g["name"]) == self.keys.intake_group), None
        )
        if last is None:
            return 0
        millis, _, seq = _text(last).partition("-")
        keep_from = f"{millis}-{int(seq or 0) + 1}"
        if summary["pending"] and summary["min"] is not None:
            keep_from = min(keep_from, _text(summary["min"]), key=_stream_id)
        return int(client.xtrim(self.keys.intake, minid=keep_from, approximate=False))

    def settle(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> int:
        records: list[Pending] = []
        types: list[str] = []
        settings = self.runtime.settings
        registry = self.runtime.registry
        for raw_id, fields in entries:
            entry = raw_id.decode()
            raw = (fields or {}).get(b"job")
            try:
                accepted = validate_entry(
                    raw, registry, settings.intake_max_bytes, {**self._context, "entry": entry}
                )
            except Rejection as exc:
                records.append(reject_record(entry, raw if raw is not None else _describe(fields), str(exc)))
                types.append(f"!{exc.reason}")
                continue
            except Exception as exc:  # a bug in a model's validator must not stop the intake
                log.exception("intake.validation_crashed", entry=entry)
                records.append(reject_record(entry, raw or b"", f"internal error while validating: {exc}"))
                types.append("!internal")
                continue
            job_type = accepted.job_type
            idem = f"{job_type.name}:{accepted.job_id}" if accepted.job_id is not None else None
            queue = job_type.queue_for(accepted.data)
            submitted_ms = int(entry.split("-", 1)[0])
            if job_type.batch is not None and queue == job_type.queue:
                records.append(
                    lane_record(
                        self.keys,
                        job_type,
                        accepted.payload,
                        idempotency_key=idem,
                        job_id=accepted.job_id,
                        entry=entry,
                        submitted_ms=submitted_ms,
                    )
                )
                types.append(job_type.name)
                continue
            records.append(
                job_record(
                    self.keys,
                    job_type,
                    accepted.payload,
                    queue=queue,
                    idempotency_key=idem,
                    job_id=accepted.job_id,
                    entry=entry,
                    submitted_ms=submitted_ms,
                )
            )
            types.append(job_type.name)
        results = self.committer.commit(records)
        # Counted once per kind and type: a batch of 200 would otherwise pay 200 metric writes.
        counts = Counter(zip(types, results, strict=True))
        for (name, result), count in counts.items():
            if result == REJECTED:
                metrics.JOBS_REJECTED.labels(name[1:]).inc(count)
            elif result == DUPLICATE:
                metrics.JOBS_DUPLICATE.labels(name).inc(count)
            else:
                metrics.JOBS_ACCEPTED.labels(name).inc(count)
        metrics.INTAKE_BATCH.observe(len(records))
        return len(records)

    def run(self, stop: threading.Event) -> None:
        """Read until ``stop`` is set; wait out Redis outages with backoff."""
        backoff_s = 0.1
        while not stop.is_set():
            try:
                if not self.healthy:
                    self.ensure_group()
                    self.healthy = True
                    backoff_s = 0.1
                    log.info("intake.reading", stream=self.keys.intake, consumer=self.consumer)
                now = time.monotonic()
                if now >= self._next_claim:
                    self._next_claim = now + CLAIM_INTERVAL_S
                    self.claim_stale()
                    self.trim_settled()
                    forget_idle_consumers(
                        self.runtime.redis, self.keys.intake, self.keys.intake_group, keep=self.consumer
                    )
                linger_after(self.poll_once(block_ms=500), stop)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if self.healthy:
                    log.warning("intake.redis_unavailable", error=str(exc))
                self.healthy = False
                stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)
            except redis.ResponseError as exc:
                # NOGROUP after Redis lost its data (restarted without persistence): recreate.
                log.warning("intake.redis_error", error=str(exc))
                self.healthy = False
                stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 5.0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _stream_id(entry: str) -> tuple[int, int]:
    millis, _, seq = entry.partition("-")
    return int(millis), int(seq or 0)


def _describe(fields: dict[bytes, bytes] | None) -> bytes:
    if fields is None:
        return b""
    return b"{fields: " + b", ".join(sorted(fields)) + b"}"
