"""The Dramatiq broker of a worker process, with one actor per job type and queue."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Retries, TimeLimit

from worker.context import JobContext
from worker.errors import NotReady, PermanentError
from worker.events import JobRef
from worker.lanes import Lanes
from worker.middleware.lifecycle import JobLifecycle, current_message, job_ref
from worker.middleware.maintenance import Maintenance
from worker.redis_conn import connect, redis_url
from worker.registry import QUEUE_PRIORITY, QUEUES, JobType
from worker.runtime import Runtime


def build_broker(
    runtime: Runtime, *, on_memory_limit: Callable[[], None] = lambda: None, lanes: bool = True
) -> RedisBroker:
    """The Dramatiq broker of a worker; with ``lanes`` its workers also take the batch lanes."""
    settings = runtime.settings
    middleware = [
        AgeLimit(max_age=int(settings.job_max_age * 1000)),
        TimeLimit(time_limit=int(settings.job_time_limit * 1000)),
        Retries(
            max_retries=settings.job_max_retries,
            min_backoff=int(settings.job_min_backoff * 1000),
            max_backoff=int(settings.job_max_backoff * 1000),
        ),
        JobLifecycle(runtime),
        *([Lanes(runtime)] if lanes else []),
        Maintenance(
            queues=list(QUEUES),
            interval_s=settings.maintenance_interval,
            memory_limit_mb=settings.worker_memory_limit_mb,
            on_memory_limit=on_memory_limit,
        ),
    ]
    broker = RedisBroker(
        client=connect(redis_url(settings)),
        namespace=runtime.keys.dramatiq_namespace,
        heartbeat_timeout=int(settings.worker_heartbeat_timeout * 1000),
        dead_message_ttl=int(settings.dead_letter_ttl * 1000),
        # Maintenance runs on a fixed interval (worker/middleware/maintenance.py), not by chance.
        maintenance_chance=0,
        middleware=middleware,
    )
    for job_type in runtime.registry.all():
        declare_actors(broker, runtime, job_type)
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker


def declare_actors(broker: RedisBroker, runtime: Runtime, job_type: JobType[Any]) -> None:
    fn = _actor_fn(runtime, job_type)
    options: dict[str, Any] = {"throws": (PermanentError,)}
    if job_type.max_retries is not None:
        options["max_retries"] = job_type.max_retries
    if job_type.time_limit_s is not None:
        options["time_limit"] = int(job_type.time_limit_s * 1000)
    for queue in job_type.all_queues():
        dramatiq.Actor(
            fn,
            broker=broker,
            actor_name=job_type.actor_name(queue),
            queue_name=queue,
            priority=QUEUE_PRIORITY[queue],
            options=options,
        )


def _actor_fn(runtime: Runtime, job_type: JobType[Any]) -> Callable[..., None]:
    settings = runtime.settings
    context = {"settings": settings, "stage": "worker"}

    def run(data: dict[str, Any]) -> None:
        message = current_message.get()
        options = message.options if message is not None else {}
        retries = int(options.get("retries", 0))
        submitted_ms = int((options.get("job") or {}).get("submitted_ms") or time.time() * 1000)
        ctx = JobContext(
            runtime=runtime,
            job=job_ref(message) if message is not None else JobRef(type=job_type.name, id=None, entry=None),
            submitted_ms=submitted_ms,
            retries=retries,
            message_id=message.message_id if message is not None else "",
        )
        try:
            job_type.handler(ctx, job_type.model.model_validate(data, context=context))
        except NotReady as exc:
            waited_s = time.time() - submitted_ms / 1000
            if waited_s >= settings.not_ready_max_age:
                raise PermanentError(f"{exc} (still not ready after {waited_s:.0f}s)") from exc
            if message is not None:
                # Waiting for a prerequisite is bounded by time (TASKMASTER_NOT_READY_MAX_AGE),
                # not by the retry count meant for failures.
                message.options["max_retries"] = retries + 1
            # Capped at a minute, so a waiting job checks again at least that often.
            raise dramatiq.Retry(str(exc), delay=int(1000 * ctx.backoff_s(cap_s=60.0))) from None

    run.__name__ = run.__qualname__ = job_type.name.replace(".", "_")
    run.__module__ = job_type.handler.__module__
    return run
