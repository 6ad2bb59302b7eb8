"""Fan-out of a notification to its endpoints, and one delivery attempt with what follows it.

Retries of minutes or hours are held in the due-time store (worker/due.py), one item per
attempt, not as Dramatiq delayed messages that a worker would keep in memory until due.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from jobs.webhooks import client
from jobs.webhooks.errors import WebhookError
from jobs.webhooks.keys import WebhookKeys
from jobs.webhooks.models import WebhookDeliver
from jobs.webhooks.signing import signed_headers, webhook_id_for
from jobs.webhooks.store import EndpointStore, endpoint_store
from jobs.webhooks.targets import AddressGuard, Resolver, system_resolve
from worker.crypto import DecryptionError
from worker.due import DueStore
from worker.events import JobRef, current_job
from worker.logging import get_logger
from worker.registry import JobType
from worker.runtime import Runtime
from worker.submit import Committer, job_record

log = get_logger(__name__)

DELIVER = "webhook.deliver"
USER_AGENT = "taskmaster-worker-webhooks/1"
# Spread retries a little (the spec recommends jitter), so that deliveries that failed
# together do not all come back in the same instant.
JITTER_FRACTION = 0.1
Outcome = Literal["delivered", "retrying", "failed", "skipped"]


def _deliver_type(runtime: Runtime) -> JobType[Any]:
    job_type = runtime.registry.get(DELIVER)
    if job_type is None:
        raise WebhookError(f"{DELIVER} is not registered: add jobs.webhooks to TASKMASTER_JOB_MODULES")
    return job_type


def enqueue_delivery(
    runtime: Runtime,
    *,
    user_id: str | None,
    category: str | None,
    event_type: str,
    payload: dict[str, Any],
    message_id: str,
) -> int:
    """Enqueue one `webhook.deliver` job per enabled endpoint taking this event; return how many.

    Idempotent per (message, endpoint): calling again for the same ``message_id`` (a retried
    notification job) enqueues nothing new and returns the same count.
    """
    endpoints = endpoint_store(runtime).matching(user_id, category)
    if not endpoints:
        return 0
    job_type = _deliver_type(runtime)
    settings = runtime.settings
    webhook_id = webhook_id_for(message_id)
    envelope = {
        "type": event_type,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": payload,
    }
    try:
        body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise WebhookError(f"the payload of {event_type!r} is not JSON: {exc}") from exc
    origin = current_job.get()
    submitted_ms = int(datetime.now(UTC).timestamp() * 1000)
    records = []
    for endpoint_id in endpoints:
        data = WebhookDeliver(
            endpoint_id=endpoint_id,
            webhook_id=webhook_id,
            message_id=message_id,
            event_type=event_type,
            body=body,
        ).model_dump(mode="json")
        record = job_record(
            runtime.keys,
            job_type,
            data,
            queue=job_type.queue,
            idempotency_key=WebhookKeys.enqueue_idempotency(endpoint_id, webhook_id),
            job_id=origin.id if origin else None,
            entry=origin.entry if origin else None,
            submitted_ms=submitted_ms,
        )
        # The message names the originating intake entry, so that events carry it; the record
        # names none, or the commit would acknowledge that entry a second time.
        records.append(replace(record, entry=""))
    Committer(
        runtime.redis,
        runtime.keys,
        idempotency_ttl_s=settings.idempotency_ttl,
        rejected_maxlen=settings.rejected_maxlen,
    ).commit(records)
    return len(endpoints)


def next_delay_s(schedule: list[float], attempt: int, retry_after_s: float | None) -> float | None:
    """The wait before attempt ``attempt + 1``; None when ``attempt`` was the last.

    A receiver's Retry-After may lengthen a wait, up to the schedule's longest delay, never
    shorten it.
    """
    if attempt > len(schedule):
        return None
    delay = schedule[attempt - 1]
    if retry_after_s is not None and schedule:
        delay = max(delay, min(retry_after_s, max(schedule)))
    return delay


def attempt_delivery(
    runtime: Runtime,
    data: WebhookDeliver,
    *,
    now: datetime,
    job: JobRef | None = None,
    resolve: Resolver = system_resolve,
) -> Outcome:
    """Make attempt ``data.attempt``, then record success, schedule the next, or give up."""
    settings = runtime.settings
    keys = WebhookKeys(settings.redis_prefix)
    delivered_key = keys.delivered(data.endpoint_id, data.webhook_id)
    store = endpoint_store(runtime)
    if runtime.redis.exists(delivered_key):
        # A redelivered job whose webhook was already accepted (the worker died right after).
        store.record_success(data.endpoint_id)
        return "skipped"
    report = _Reporter(runtime, data, job)
    try:
        endpoint = store.load(data.endpoint_id)
    except DecryptionError:
        error = "the signing secret does not decrypt with TASKMASTER_SECRET_KEY"
        report.failed(None, error, "secret_undecryptable")
        return "failed"
    if endpoint is None:
        report.failed(None, "the endpoint was deleted", "endpoint_deleted")
        return "failed"
    if not endpoint.enabled:
        report.failed(None, "the endpoint is disabled", "endpoint_disabled")
        return "failed"

    body = data.body.encode()
    headers = signed_headers(endpoint.secrets, data.webhook_id, int(now.timestamp()), body)
    headers["user-agent"] = USER_AGENT
    result = client.post(
        endpoint.url,
        body,
        headers,
        guard=AddressGuard(allow_private=settings.webhook_allow_private, resolve=resolve),
        timeout_s=settings.webhook_timeout,
        max_response_bytes=settings.webhook_max_response_bytes,
    )
    log.info(
        "webhook.attempt",
        endpoint_id=data.endpoint_id,
        webhook_id=data.webhook_id,
        attempt=data.attempt,
        status=result.status,
        error=result.error,
        response_bytes=len(result.body),
        response_truncated=result.truncated,
    )
    if result.ok:
        pipe = runtime.redis.pipeline(transaction=True)
        pipe.set(delivered_key, 1, ex=int(settings.idempotency_ttl))
        runtime.events.publish_in(pipe, "webhook.delivered", report.data(result.status), job=job)
        pipe.execute()
        store.record_success(data.endpoint_id)
        return "delivered"
    return _after_failure(runtime, store, data, result, now=now, job=job, report=report)


def _after_failure(
    runtime: Runtime,
    store: EndpointStore,
    data: WebhookDeliver,
    result: client.AttemptResult,
    *,
    now: datetime,
    job: JobRef | None,
    report: _Reporter,
) -> Outcome:
    settings = runtime.settings
    error = result.error or "failed"
    if result.status == 410:
        # The spec: 410 Gone means the receiver wants no more webhooks from us.
        if store.disable(data.endpoint_id):
            report.endpoint_disabled("the endpoint answered 410 Gone")
        report.failed(result.status, error, "endpoint_gone")
        return "failed"
    state = store.record_failure(data.endpoint_id, now, settings.webhook_disable_after)
    if state is None:
        report.failed(result.status, error, "endpoint_deleted")
        return "failed"
    if state.disabled_now:
        report.endpoint_disabled(
            f"failing since {state.failing_since.isoformat()}, longer than TASKMASTER_WEBHOOK_DISABLE_AFTER"
        )
    if not state.enabled:
        report.failed(result.status, error, "endpoint_disabled")
        return "failed"
    delay_s = next_delay_s(settings.webhook_retry_schedule, data.attempt, result.retry_after_s)
    if delay_s is None:
        report.failed(result.status, error, "attempts_exhausted")
        return "failed"
    delay_s += random.uniform(0, JITTER_FRACTION * delay_s)
    following = data.model_copy(update={"attempt": data.attempt + 1})
    DueStore(runtime.redis, runtime.keys).put(
        WebhookKeys.retry_item(data.endpoint_id, data.webhook_id, following.attempt),
        _deliver_type(runtime),
        following.model_dump(mode="json"),
        now + timedelta(seconds=delay_s),
        job_id=job.id if job else None,
        entry=job.entry if job else None,
    )
    return "retrying"


class _Reporter:
    """The events of one delivery, each naming the endpoint, the webhook and the attempts."""

    def __init__(self, runtime: Runtime, data: WebhookDeliver, job: JobRef | None) -> None:
        self._runtime = runtime
        self._data = data
        self._job = job

    def data(self, status: int | None, **extra: Any) -> dict[str, Any]:
        return {
            "endpoint_id": self._data.endpoint_id,
            "webhook_id": self._data.webhook_id,
            "message_id": self._data.message_id,
            "event_type": self._data.event_type,
            "attempts": self._data.attempt,
            "status": status,
            **extra,
        }

    def failed(self, status: int | None, error: str, reason: str) -> None:
        ids = {"endpoint_id": self._data.endpoint_id, "webhook_id": self._data.webhook_id}
        log.warning("webhook.failed", **ids, reason=reason)
        self._runtime.events.publish(
            "webhook.failed", self.data(status, error=error, reason=reason), job=self._job
        )

    def endpoint_disabled(self, why: str) -> None:
        log.warning("webhook.endpoint_disabled", endpoint_id=self._data.endpoint_id, why=why)
        self._runtime.events.publish(
            "webhook.endpoint.disabled", {"endpoint_id": self._data.endpoint_id, "reason": why}, job=self._job
        )
