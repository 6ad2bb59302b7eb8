"""The notification job handlers: thin, the work is in send.py, flush.py and cancel below."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import cast

from jobs.notifications import cli as cli
from jobs.notifications.flush import FLUSH_JOB, Emit, FlushJob, Services, flush, record
from jobs.notifications.models import CHANNELS, Channel, NotificationCancel, NotificationSend
from jobs.notifications.send import Incoming, send, send_many
from jobs.notifications.state import decode_item
from worker.context import JobContext
from worker.events import Emitter
from worker.lanes import LaneJob
from worker.registry import job
from worker.runtime import Runtime

_services: dict[int, Services] = {}
_lock = threading.Lock()


def services(runtime: Runtime) -> Services:
    """One Services per runtime (its limiter batches the threads of this process)."""
    with _lock:
        svc = _services.get(id(runtime))
        if svc is None or svc.runtime is not runtime:
            svc = _services[id(runtime)] = Services.build(runtime)
        return svc


def route(data: NotificationSend) -> str:
    return "urgent" if data.priority == "urgent" else "default"


def send_batch(runtime: Runtime, jobs: list[LaneJob]) -> list[LaneJob]:
    """The lane of `notification.send` (worker/lanes.py): a batch decided with shared round
    trips; returns the jobs whose user is not known yet (Dramatiq retries those alone)."""
    by_key = {job.idempotency_key: job for job in jobs}
    batch = [
        Incoming(
            job.data,
            job.job.id or job.idempotency_key,
            job.idempotency_key,
            job.submitted_ms,
            Emitter(runtime.events, job.job),
        )
        for job in jobs
    ]
    return [by_key[waiting.idempotency_key] for waiting in send_many(services(runtime), batch)]


# Urgent notifications stay on Dramatiq's urgent queue, one message each: never behind a batch.
@job(
    "notification.send",
    NotificationSend,
    queue="default",
    queues=("urgent",),
    route=route,
    batch=send_batch,
)
def notification_send(ctx: JobContext, data: NotificationSend) -> None:
    send(
        services(ctx.runtime),
        ctx.emit,
        data,
        notification_id=ctx.job.id or ctx.idempotency_key,
        idempotency_key=ctx.idempotency_key,
        submitted_ms=ctx.submitted_ms,
    )


# On the urgent queue too: an urgent delivery a rate limit held flushes there.
@job(FLUSH_JOB, FlushJob, queue="default", queues=("urgent",), public=False)
def notifications_flush(ctx: JobContext, data: FlushJob) -> None:
    flush(services(ctx.runtime), ctx.emit, data, owner=ctx.message_id or "local", now=datetime.now(UTC))


@job("notification.cancel", NotificationCancel, queue="default")
def notification_cancel(ctx: JobContext, data: NotificationCancel) -> None:
    cancel(services(ctx.runtime), ctx.emit, data)


def cancel(svc: Services, emit: Emit, data: NotificationCancel) -> None:
    """Withdraw a held notification from every batch it waits in; report each channel."""
    state = svc.state
    if data.notification_id is not None:
        targets = state.where(data.notification_id)
    else:
        assert data.user_id is not None and data.dedupe_key is not None
        targets = {
            channel: (svc.keys.batch(data.user_id, channel), f"dk:{data.dedupe_key}") for channel in CHANNELS
        }
    found = False
    for channel, (key, field) in targets.items():
        raw, user = svc.runtime.redis.hmget(key, [field, "m:user"])
        if raw is None or user is None or state.withdraw(key, field, data.notification_id) == 0:
            continue
        found = True
        record(
            svc,
            emit,
            user_id=user.decode() if isinstance(user, bytes) else str(user),
            channel=cast(Channel, channel),
            items=[decode_item(raw)],
            outcome="cancelled",
            reason="cancel",
            extra={"found": True},
        )
    if not found:
        emit(
            "notification.cancelled",
            {
                "notification_id": data.notification_id,
                "user_id": data.user_id,
                "dedupe_key": data.dedupe_key,
                "channel": None,
                "found": False,
                "reason": "not_held",
            },
        )
