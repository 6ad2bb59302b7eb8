"""Around every job: context for logs and events, metrics, dead-letter events, schedule state."""

from __future__ import annotations

import json
import time
from contextvars import ContextVar
from typing import Any

import structlog
from dramatiq import Middleware
from dramatiq.broker import Broker, MessageProxy

from worker import metrics
from worker.events import JobRef, current_job
from worker.logging import get_logger, redact_text
from worker.runtime import Runtime

log = get_logger(__name__)

# The message being processed by this thread, for the actor wrapper (worker/broker.py).
current_message: ContextVar[MessageProxy | None] = ContextVar("current_message", default=None)


def job_ref(message: MessageProxy) -> JobRef:
    job = message.options.get("job") or {}
    return JobRef(type=job.get("type") or message.actor_name, id=job.get("id"), entry=job.get("entry"))


class JobLifecycle(Middleware):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        ref = job_ref(message)
        current_message.set(message)
        current_job.set(ref)
        structlog.contextvars.bind_contextvars(
            job_type=ref.type, job_id=ref.id, entry=ref.entry, message_id=message.message_id
        )
        if not message.options.get("retries"):
            submitted_ms = (message.options.get("job") or {}).get("submitted_ms")
            if submitted_ms:
                latency_s = max(0.0, time.time() - submitted_ms / 1000)
                metrics.START_LATENCY.labels(message.queue_name).observe(latency_s)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        ref = job_ref(message)
        if exception is None:
            metrics.JOBS_PROCESSED.labels(ref.type).inc()
        else:
            metrics.JOBS_FAILED.labels(ref.type).inc()
            if not message.failed:
                metrics.JOBS_RETRIED.labels(ref.type).inc()
        if exception is None or message.failed:
            self._clear_schedule_running(message)
        current_message.set(None)
        current_job.set(None)
        structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._clear_schedule_running(message)
        current_message.set(None)
        current_job.set(None)
        structlog.contextvars.clear_contextvars()

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        """The message went to the dead letters: tell the host, with what went wrong."""
        ref = job_ref(message)
        exception = getattr(message, "_exception", None)
        if exception is None or type(exception).__name__ == "SkipMessage":
            error = "the job was older than TASKMASTER_JOB_MAX_AGE before it could run"
        else:
            error = redact_text(f"{type(exception).__name__}: {exception}")
        metrics.JOBS_DEAD.labels(ref.type).inc()
        log.error("job.dead", job_type=ref.type, job_id=ref.id, entry=ref.entry, error=error)
        self._record_error(message, error)
        try:
            self.runtime.events.publish(
                "job.dead",
                {
                    "retries": message.options.get("retries", 0),
                    "error": error,
                    "message_id": message.message_id,
                },
                job=ref,
            )
        except Exception:
            log.exception("job.dead_event_failed", message_id=message.message_id)

    def _record_error(self, message: MessageProxy, error: str) -> None:
        """Write the error into the dead letter, which Dramatiq stores as first enqueued."""
        queue = message.queue_name.removesuffix(".DQ")
        key = self.runtime.keys.dead_letter_messages(queue)
        redis_id = message.options.get("redis_message_id")
        try:
            raw = self.runtime.redis.hget(key, redis_id) if redis_id else None
            if raw is None:
                return
            stored = json.loads(raw)
            stored.setdefault("options", {})["error"] = error
            stored["options"]["retries"] = message.options.get("retries", 0)
            self.runtime.redis.hset(key, redis_id, json.dumps(stored, separators=(",", ":")))
        except Exception:
            log.warning("job.dead_error_not_recorded", message_id=message.message_id)

    def _clear_schedule_running(self, message: MessageProxy) -> None:
        schedule = (message.options.get("job") or {}).get("schedule")
        if schedule:
            try:
                self.runtime.redis.delete(self.runtime.keys.schedule_running(schedule))
            except Exception:
                log.warning("schedule.running_clear_failed", schedule=schedule)
