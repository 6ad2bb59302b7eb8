"""Sending one push to each of a user's devices, reporting each device on its own.

Per device: `push.sent`, or `push.failed` with the FCM code (an unregistered token is also
removed from the user). Devices that met a transient error are retried by the job as a whole,
after the others are done; the attempt records (jobs/push/attempts.py) keep the retry from
sending again to devices already settled. Every call goes through the `fcm` circuit breaker,
shared by all daemons: a refused message is FCM answering properly and does not count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dramatiq

from jobs.push.attempts import PENDING, Attempts, device_id, redis_errors
from jobs.push.devices import Device, remove_device
from jobs.push.errors import FcmError, FcmTransient, FcmUnreachable, MessageRejected, TokenUnregistered
from jobs.push.fcm import FcmClient, build_message
from jobs.push.models import PushSend
from worker.breaker import BreakerOpen, CircuitBreaker, RedisBackend
from worker.context import JobContext
from worker.logging import get_logger

log = get_logger(__name__)

BREAKER_NAME = "fcm"


@dataclass
class Report:
    """What one attempt of the job did; devices settled by an earlier attempt are skipped."""

    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    # Devices to try again: after the runtime's backoff, or after a known wait.
    to_retry: list[FcmTransient] = field(default_factory=list)
    waits_s: dict[str, float] = field(default_factory=dict)  # device -> seconds, with why below
    wait_reasons: set[str] = field(default_factory=set)


def lease_s(timeout_s: float) -> float:
    """Longer than one device's attempt can take: a token fetch, a send, and one resend."""
    return 3 * timeout_s + 30.0


def deliver(ctx: JobContext, push: PushSend, client: FcmClient, devices: list[Device]) -> Report:
    settings = ctx.runtime.settings
    attempts = Attempts(
        ctx.runtime.redis,
        ctx.runtime.keys.prefix,
        ctx.idempotency_key,
        lease_s=lease_s(settings.provider_timeout),
        ttl_s=settings.idempotency_ttl,
    )
    breaker = CircuitBreaker.from_settings(
        RedisBackend(ctx.runtime.redis, ctx.runtime.keys.prefix),
        BREAKER_NAME,
        settings,
        exclude=(TokenUnregistered, MessageRejected),
    )
    report = Report()
    for device in devices:
        name = device_id(device.token)
        recorded = attempts.begin(name)
        if recorded == PENDING:
            # Another delivery of this job is sending to it, or died doing so: look again later.
            report.waits_s[name] = attempts.lease_left_s(name)
            report.wait_reasons.add("an attempt in flight")
            continue
        if recorded is not None:
            report.already_done.append(name)
            continue
        try:
            with breaker.guard():
                provider_id = client.send(build_message(device.token, push))
        except TokenUnregistered as exc:
            try:
                removed = remove_device(ctx.runtime.db, push.user_id, device.token)
            except BaseException:
                attempts.abandon(name)
                raise
            _settle(ctx, attempts, device, "unregistered", _failed(push, device, exc, removed))
            report.failed.append(name)
        except MessageRejected as exc:
            _settle(ctx, attempts, device, f"rejected:{exc.code}", _failed(push, device, exc, False))
            report.failed.append(name)
        except BreakerOpen as exc:
            attempts.abandon(name)
            report.waits_s[name] = exc.retry_after_s
            report.wait_reasons.add("circuit breaker open")
            break  # the breaker would refuse the next device too
        except FcmTransient as exc:
            attempts.abandon(name)
            report.to_retry.append(exc)
            log.warning("push.retry_later", user_id=push.user_id, device=name, error=exc.code)
            if isinstance(exc, FcmUnreachable):
                break  # FCM or the token endpoint is not answering: the next device would wait too
        except BaseException:
            attempts.abandon(name)
            raise
        else:
            _settle(ctx, attempts, device, "sent", _sent(push, device, provider_id))
            report.sent.append(name)
    return report


def retry_if_needed(report: Report) -> None:
    """Raise what makes the runtime retry the job for the devices not settled yet."""
    if not report.to_retry and not report.waits_s:
        return
    delays_s = [e.retry_after_s for e in report.to_retry if e.retry_after_s is not None]
    delays_s += report.waits_s.values()
    reasons = sorted({e.code for e in report.to_retry} | report.wait_reasons)
    summary = f"{len(report.to_retry) + len(report.waits_s)} device(s) to retry: {', '.join(reasons)}"
    if delays_s:
        # Retry-After (QUOTA_EXCEEDED, UNAVAILABLE), a breaker's cool-down, a lease: wait that long.
        raise dramatiq.Retry(summary, delay=max(1, int(max(delays_s) * 1000)))
    first = report.to_retry[0]
    raise FcmTransient(summary, first.failure) from first


def _settle(ctx: JobContext, attempts: Attempts, device: Device, outcome: str, event: dict[str, Any]) -> None:
    """Record the outcome and its event in one transaction: a retry finds both or neither."""
    event_type = "push.sent" if outcome == "sent" else "push.failed"
    with redis_errors("recording a push outcome"):
        pipe = ctx.runtime.redis.pipeline(transaction=True)
        attempts.finish(pipe, event["device"], outcome)
        ctx.runtime.events.publish_in(pipe, event_type, event, job=ctx.job)
        pipe.execute()
    if event_type == "push.sent":
        log.info(event_type, user_id=event["user_id"], device=event["device"], platform=device.platform)
    else:
        log.warning(event_type, user_id=event["user_id"], device=event["device"], error=event["error"])


def _base(push: PushSend, device: Device) -> dict[str, Any]:
    return {
        "user_id": push.user_id,
        "notification_id": push.notification_id,
        "device": device_id(device.token),
        "platform": device.platform,
        "provider": "fcm",
    }


def _sent(push: PushSend, device: Device, provider_id: str) -> dict[str, Any]:
    return {**_base(push, device), "provider_message_id": provider_id}


def _failed(push: PushSend, device: Device, exc: FcmError, removed: bool) -> dict[str, Any]:
    detail = exc.failure.message if exc.failure is not None else str(exc)
    return {
        **_base(push, device),
        "reason": "unregistered" if isinstance(exc, TokenUnregistered) else "rejected",
        "error": exc.code,
        # FCM's words, minus the token should it ever quote it.
        "detail": detail.replace(device.token, device_id(device.token)),
        "removed": removed,
    }
