"""Closing a batch exactly once, and the parts every delivery shares: rate limits, records.

A flush is the internal `notifications.flush` job released by the DueStore when a batch's close
is due. It decides the batch again (`decide_batch`: quiet hours or a cap may still hold it),
then claims it atomically (the batch key is renamed to a key of its own, so later items start a
new batch and two flushes cannot both take it), hands the message over with an idempotency key
derived from the batch id, marks it sent, and only then deletes the claimed key. A flush that
dies after claiming is retried under the same Dramatiq message id, resumes its own claim and
hands over with the same key: one message.
"""

from __future__ import annotations

import hashlib
from collections import Counter as CounterOf
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, insert

from jobs.notifications import metrics
from jobs.notifications.channels import Delivery, deliver, has_target
from jobs.notifications.decision import ChannelDecision, DigestRules, decide_batch
from jobs.notifications.digest import DigestItem, DigestView, compose
from jobs.notifications.keys import NotifKeys
from jobs.notifications.models import Channel
from jobs.notifications.profiles import Profile, ProfileCache, load_profile
from jobs.notifications.state import Claim, NotifState
from worker.db.group import Kind
from worker.db.messaging import NotificationLog
from worker.due import DueStore
from worker.logging import get_logger
from worker.ratelimit import RateLimiter, RedisBackend, Rule

if TYPE_CHECKING:
    from jobs.webhooks.store import EndpointOwners
    from worker.runtime import Runtime

log = get_logger(__name__)

Emit = Callable[[str, dict[str, Any]], None]
FLUSH_JOB = "notifications.flush"
# A flush holds its claim this long; past it another flush may take the batch over.
CLAIM_LEASE_S = 120.0


class FlushJob(BaseModel):
    """Close the batch ``batch_id`` held at ``batch_key``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str
    channel: Channel
    batch_key: str
    batch_id: str
    # An urgent delivery held by a rate limit: its flush runs on the urgent queue, not behind
    # the ordinary backlog.
    urgent: bool = False
    # Held for the rate limits, which booked it a slot at its release: it goes without asking
    # again (asking again, it would find the room taken by the others held as long).
    reserved: bool = False


@dataclass
class Services:
    """What sending needs, built once per runtime."""

    runtime: Runtime
    state: NotifState
    due: DueStore
    limiter: RateLimiter
    rules: DigestRules
    user_rule: Rule
    global_rule: Rule
    webhook_owners: EndpointOwners
    profiles: ProfileCache

    @classmethod
    def build(cls, runtime: Runtime) -> Services:
        # Here, not at the top: importing the webhooks capability registers its job types, which
        # a daemon without it (TASKMASTER_JOB_MODULES) should not get by loading this module.
        from jobs.webhooks.store import EndpointOwners

        settings = runtime.settings
        return cls(
            runtime=runtime,
            state=NotifState(runtime.redis, NotifKeys(settings.redis_prefix)),
            due=DueStore(runtime.redis, runtime.keys),
            limiter=RateLimiter(RedisBackend(runtime.redis, runtime.keys)),
            rules=DigestRules.from_settings(settings),
            user_rule=Rule(limit=settings.rate_user_per_minute, period_s=60.0),
            global_rule=Rule(
                limit=settings.rate_global_per_second, period_s=1.0, burst=settings.rate_global_burst
            ),
            webhook_owners=EndpointOwners(runtime.reader),
            profiles=ProfileCache(runtime.redis, NotifKeys(settings.redis_prefix)),
        )

    def reaches(self, recipient: Profile, channel: Channel) -> bool:
        """Whether the user can be reached on ``channel`` at all: an address, a device, or an
        enabled webhook endpoint that takes their events."""
        if channel == "webhook":
            return self.webhook_owners.reach(recipient.user_id)
        return has_target(recipient, channel)

    @property
    def keys(self) -> NotifKeys:
        return self.state.keys

    def put_flush(self, due_key: str, job: FlushJob, due_at: datetime) -> None:
        self.due.put_many([self.flush_item(due_key, job, due_at)])

    def flush_item(self, due_key: str, job: FlushJob, due_at: datetime) -> tuple[str, int, str]:
        """`put_flush` as an item for `DueStore.put_many` (many closes in one round trip)."""
        job_type = self.runtime.registry.get(FLUSH_JOB)
        if job_type is None:
            raise RuntimeError("notifications.flush is not registered: import jobs.notifications.actors")
        queue = "urgent" if job.urgent else "default"
        return self.due.item(due_key, job_type, job.model_dump(exclude_defaults=True), due_at, queue=queue)

    def _rate_checks(self, user_id: str) -> list[tuple[str, Rule]]:
        return [(self.keys.rate_user(user_id), self.user_rule), (self.keys.rate_global, self.global_rule)]

    def rate_waits(self, user_ids: Sequence[str]) -> list[float]:
        """`rate_wait_s` for each delivery to ``user_ids``, in order, in one round trip."""
        decisions = self.limiter.book_many([self._rate_checks(u) for u in user_ids])
        return [0.0 if d.allowed else max(d.retry_after_s, 0.001) for d in decisions]

    def rate_wait_s(self, user_id: str, *, patience_s: float = 0.0) -> float:
        """0 when a delivery to the user may go now (and is counted), else seconds until the
        slot the rate limits booked for it (`delay_for_rate` holds it until then).

        With ``patience_s``, a wait that ends within it is slept here instead (an urgent delivery
        a moment over the global rate goes in milliseconds, not through the due-time store).
        """
        checks = self._rate_checks(user_id)
        if patience_s > 0 and self.limiter.wait(checks, timeout_s=patience_s).allowed:
            return 0.0
        return self.rate_waits([user_id])[0]


def iso(instant: datetime | None) -> str | None:
    return None if instant is None else instant.isoformat().replace("+00:00", "Z")


@dataclass
class _Together:
    """What `record` holds back inside `logged_together`: log rows, and decision counts."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: CounterOf[tuple[str, str, str]] = field(default_factory=CounterOf)


_together: ContextVar[_Together | None] = ContextVar("_together", default=None)


@contextmanager
def logged_together(svc: Services) -> Iterator[None]:
    """Write the log rows of every `record` inside in one transaction, at the end (and count
    their decisions in the metrics once per kind).

    A notification decided on three channels would otherwise pay three writes; the rows of every
    thread then share the process's group commit.
    """
    held = _Together()
    token = _together.set(held)
    try:
        yield
    finally:
        _together.reset(token)
        for labels, count in held.counts.items():
            metrics.DECISIONS.labels(*labels).inc(count)
        if held.rows:
            svc.runtime.writer.write(_LOG_ROWS, held.rows)


def _insert_log_rows(connection: Connection, batches: Sequence[list[dict[str, Any]]]) -> list[None]:
    connection.execute(insert(NotificationLog), [row for rows in batches for row in rows])
    return [None] * len(batches)


# Log rows of every thread of the process, in shared transactions (worker/db/group.py).
_LOG_ROWS: Kind[list[dict[str, Any]], None] = Kind("notifications.log", _insert_log_rows)


def record(
    svc: Services,
    emit: Emit,
    *,
    user_id: str,
    channel: Channel,
    items: Sequence[DigestItem],
    outcome: str,
    reason: str,
    until: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """One decision on one channel: a log row per notification, one event, metrics."""
    rows = [
        {
            "notification_id": item.notification_id,
            "user_id": user_id,
            "category": item.category,
            "channel": channel,
            "decision": outcome,
            "reason": reason,
            "decided_until": until,
        }
        for item in items
    ]
    held = _together.get()
    if held is not None:
        held.rows.extend(rows)
    elif rows:
        svc.runtime.writer.write(_LOG_ROWS, rows)
    data: dict[str, Any] = {
        "user_id": user_id,
        "channel": channel,
        "notification_ids": [item.notification_id for item in items],
        "reason": reason,
    }
    if until is not None:
        data["until"] = iso(until)
    data.update(extra or {})
    emit(f"notification.{outcome}", data)
    if held is not None:
        held.counts[(channel, outcome, reason)] += max(1, len(items))
    else:
        metrics.DECISIONS.labels(channel, outcome, reason).inc(max(1, len(items)))


def hand_over(svc: Services, recipient: Profile, delivery: Delivery, emit: Emit, reason: str) -> None:
    """Hand the delivery to its channel and report it (or that the user has no address there)."""
    outcome = deliver(svc.runtime, recipient, delivery)
    user_id = recipient.user_id
    if outcome == "no_target":
        record(
            svc,
            emit,
            user_id=user_id,
            channel=delivery.channel,
            items=delivery.items,
            outcome="suppressed",
            reason="no_address",
        )
        return
    message = delivery.message
    count = message.total if isinstance(message, DigestView) else 1
    record(
        svc,
        emit,
        user_id=user_id,
        channel=delivery.channel,
        items=delivery.items,
        outcome="delivered",
        reason=reason,
        extra={"digest": delivery.digest, "count": count},
    )
    metrics.DELIVERIES.labels(delivery.channel, str(delivery.digest).lower()).inc()
    metrics.DELIVERED_NOTIFICATIONS.labels(delivery.channel).inc(len(delivery.items))


def delay_for_rate(
    svc: Services,
    emit: Emit,
    job: FlushJob,
    due_key: str,
    items: Sequence[DigestItem],
    wait_s: float,
    now: datetime,
) -> None:
    until = now + timedelta(seconds=wait_s)
    svc.put_flush(due_key, job.model_copy(update={"reserved": True}), until)
    metrics.RATE_LIMIT_DELAYS.labels(job.channel).inc()
    metrics.RATE_LIMIT_DELAY_SECONDS.observe(wait_s)
    record(
        svc,
        emit,
        user_id=job.user_id,
        channel=job.channel,
        items=items,
        outcome="deferred",
        reason="rate_limit",
        until=until,
    )


def due_key_of(svc: Services, job: FlushJob) -> str:
    if job.batch_key == svc.keys.batch(job.user_id, job.channel):
        return svc.keys.flush_due(job.user_id, job.channel)
    return svc.keys.direct_due(job.batch_id)


def flush(svc: Services, emit: Emit, job: FlushJob, *, owner: str, now: datetime) -> None:
    """Close the batch of ``job`` once (see the module's docstring)."""
    state = svc.state
    due_key = due_key_of(svc, job)
    batch = state.read(job.batch_key)
    profile = load_profile(svc.runtime.reader, job.user_id)
    if batch is not None and batch.batch_id == job.batch_id:
        if profile is None or profile.erased:
            # Erased meanwhile: the held items go nowhere, and nothing personal stays in Redis.
            state.claim(job.batch_key, job.batch_id, owner, now=now, lease_s=CLAIM_LEASE_S)
            state.finish(job.batch_id)
            emit(
                "notification.suppressed",
                {
                    "user_id": job.user_id,
                    "channel": job.channel,
                    "reason": "user_erased",
                    "notification_ids": [item.notification_id for item in batch.items],
                },
            )
            return
        if not batch.direct:
            decision = _decide(svc, job, profile, now, take=False)
            if decision.action == "hold":
                _hold(svc, emit, job, due_key, batch.items, decision)
                return
        wait_s = 0.0 if job.reserved else svc.rate_wait_s(job.user_id)
        if wait_s > 0:
            delay_for_rate(svc, emit, job, due_key, batch.items, wait_s, now)
            return
        if not batch.direct and _capped(profile):
            decision = _decide(svc, job, profile, now, take=True)
            if decision.action == "hold":
                _hold(svc, emit, job, due_key, batch.items, decision)
                return
    elif profile is None:
        return
    claim = state.claim(job.batch_key, job.batch_id, owner, now=now, lease_s=CLAIM_LEASE_S)
    if claim == Claim.GONE:
        return
    if claim == Claim.BUSY:
        # Another flush is on it; look again when its lease lapses, in case it died for good.
        svc.put_flush(f"notif:reclaim:{job.batch_id}", job, now + timedelta(seconds=CLAIM_LEASE_S))
        return
    claimed = state.read(svc.keys.flushing(job.batch_id))
    if claimed is not None and claimed.items and not claimed.sent:
        message = compose(claimed.items, profile.timezone)
        key = "notif:" + hashlib.sha256(f"flush:{job.batch_id}:{job.channel}".encode()).hexdigest()[:32]
        delivery = Delivery(job.channel, message, claimed.items, key)
        reason = "direct" if claimed.direct else "digest"
        hand_over(svc, profile, delivery, emit, reason)
        state.mark_sent(job.batch_id)
    state.finish(job.batch_id)


def _decide(svc: Services, job: FlushJob, profile: Profile, now: datetime, *, take: bool) -> ChannelDecision:
    prefs = profile.preferences
    counters = None
    if _capped(profile):
        check = svc.state.caps(
            job.user_id,
            job.channel,
            prefs.caps,
            now,
            mode="take" if take else "peek",
            member=f"flush:{job.batch_id}",
        )
        if take and check.admitted:
            return ChannelDecision(job.channel, "deliver", "digest")
        counters = check.counters
    return decide_batch(job.user_id, job.channel, prefs, profile.timezone, now, counters)


def _hold(
    svc: Services, emit: Emit, job: FlushJob, due_key: str, items: Sequence[DigestItem], d: ChannelDecision
) -> None:
    assert d.until is not None
    # Held past its booked slot: the rate limits are asked again at the new release.
    svc.put_flush(due_key, job.model_copy(update={"reserved": False}), d.until)
    svc.state.set_close(job.batch_key, job.batch_id, d.until)
    record(
        svc,
        emit,
        user_id=job.user_id,
        channel=job.channel,
        items=items,
        outcome="deferred",
        reason=d.reason,
        until=d.until,
    )


def _capped(profile: Profile) -> bool:
    caps = profile.preferences.caps
    return bool(caps.per_hour or caps.per_day)
