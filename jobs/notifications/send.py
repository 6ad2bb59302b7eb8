"""The notification.send flow: decide on every channel, then deliver, hold or batch each.

The decision is `decide` (pure); this module feeds it the user's profile, the open batches and
the cap counters from Redis, and carries it out. Holds and digest items join the user's batch
for that channel, whose close is a DueStore item (flush.py). An immediate delivery passes the
rate limits first; over a limit it waits in a batch of its own, never dropped.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobs.notifications import metrics
from jobs.notifications.channels import Delivery
from jobs.notifications.decision import ChannelDecision, Counters, Decision, decide
from jobs.notifications.digest import DigestItem, Single
from jobs.notifications.flush import (
    Emit,
    FlushJob,
    Services,
    delay_for_rate,
    hand_over,
    logged_together,
    record,
)
from jobs.notifications.models import Channel, NotificationSend
from jobs.notifications.profiles import Profile
from jobs.notifications.state import Added, AddRequest, Ask, Snapshot
from worker.errors import NotReady
from worker.events import Emitter
from worker.logging import get_logger
from worker.submit import enqueued_together

log = get_logger(__name__)

# An urgent delivery over a rate limit waits in its worker thread when the limiter frees room
# within this long: through the due-time store it would take a release and two more jobs.
URGENT_PATIENCE_S = 0.5


@dataclass(frozen=True, slots=True)
class Incoming:
    """One `notification.send` job to decide, with the emitter that reports its outcomes."""

    notification: NotificationSend
    notification_id: str
    idempotency_key: str
    submitted_ms: int
    emit: Emit


@dataclass(slots=True)
class _Plan:
    """A notification decided, on its way to being acted on and reported."""

    incoming: Incoming
    profile: Profile
    item: DigestItem
    decision: Decision
    # Channels whose item joins a batch straight away: the index of its request in the batch's
    # one add script.
    joins: dict[Channel, int] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def send(
    svc: Services,
    emit: Emit,
    notification: NotificationSend,
    *,
    notification_id: str,
    idempotency_key: str,
    submitted_ms: int,
    now: datetime | None = None,
) -> None:
    """Decide ``notification`` on each channel and act on it; NotReady while the user is unknown."""
    incoming = Incoming(notification, notification_id, idempotency_key, submitted_ms, emit)
    if send_many(svc, [incoming], now=now):
        raise NotReady(f"user {notification.user_id!r} is not known yet")


def send_many(svc: Services, batch: Sequence[Incoming], *, now: datetime | None = None) -> list[Incoming]:
    """Decide each notification of ``batch`` on each channel and act on it, with the round trips
    shared: one script reads every snapshot, one puts every held item into its batch, one
    transaction logs every decision and one script reports them all.

    Returns the notifications whose user is not known yet, to be tried again later.
    """
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    # One job twice in a batch (an entry claimed again while still pending) is decided once:
    # both would read the same snapshot, before either marked its channels done.
    unique: dict[str, Incoming] = {}
    for incoming in batch:
        unique.setdefault(incoming.idempotency_key, incoming)
    batch = list(unique.values())
    snapshots = svc.state.snapshot(
        [Ask(i.notification.user_id, i.notification.wanted_channels(), i.idempotency_key) for i in batch]
    )
    waiting: list[Incoming] = []
    plans: list[_Plan] = []
    joins: list[AddRequest] = []
    profiles = svc.profiles.get_many(
        svc.runtime.reader,
        [(i.notification.user_id, s.token) for i, s in zip(batch, snapshots, strict=True)],
    )
    latencies: list[float] = []
    for incoming, snapshot in zip(batch, snapshots, strict=True):
        profile = profiles[incoming.notification.user_id]
        plan = _decide(svc, incoming, profile, snapshot, now, waiting)
        # Decision latency: from the batch's start, its shared snapshot included, to this one.
        latencies.append(time.perf_counter() - started)
        if plan is None:
            continue
        plans.append(plan)
        for d in plan.decision.channels:
            if d.action not in ("suppress", "deliver") and svc.reaches(plan.profile, d.channel):
                plan.joins[d.channel] = len(joins)
                joins.append(_join_request(svc, plan.profile.user_id, plan.item, d, now))
    # Metrics once the batch's decisions are taken: each costs a locked write to shared memory.
    for latency in latencies:
        metrics.DECISION_SECONDS.observe(latency)
    for priority, count in Counter(plan.incoming.notification.priority for plan in plans).items():
        metrics.RECEIVED.labels(priority).inc(count)
    added = svc.state.add_many(joins)
    # Each channel's events wait for the end: they go out with the channels' done marks in one
    # atomic round trip, after the log rows are committed. A job that dies before that is decided
    # again on every channel, which acting makes no worse (a batch holds a notification once,
    # a cap counts it once, a hand-over is enqueued once by its key); none is reported twice.
    settings = svc.runtime.settings
    runtime = svc.runtime
    with (
        logged_together(svc),
        enqueued_together(runtime.redis, runtime.keys, idempotency_ttl_s=settings.idempotency_ttl),
    ):
        closes: list[_Close] = []
        deliveries: list[tuple[_Plan, ChannelDecision]] = []
        for plan in plans:
            emit = _held(plan.events)
            for d in plan.decision.channels:
                index = plan.joins.get(d.channel)
                if index is not None:
                    closes += _joined(svc, emit, plan.profile.user_id, plan.item, d, added[index])
                elif _deliver_later(svc, plan, d):
                    deliveries.append((plan, d))
                else:
                    _act(svc, emit, plan, d, now)
        _put_closes(svc, closes)
        waits = svc.rate_waits([plan.profile.user_id for plan, _ in deliveries])
        for (plan, d), wait_s in zip(deliveries, waits, strict=True):
            key = plan.incoming.idempotency_key
            _deliver_now(svc, _held(plan.events), plan.profile, plan.item, d, key, now, wait_s=wait_s)
    payloads: list[str] = []
    done: list[tuple[str, Channel]] = []
    for plan in plans:
        emitter = plan.incoming.emit
        for kind, data in plan.events:
            if isinstance(emitter, Emitter):
                payloads.append(emitter.encode(kind, data))
            else:  # a plain callable (tests): it takes the events, the script the marks
                emitter(kind, data)
        done += ((plan.incoming.idempotency_key, d.channel) for d in plan.decision.channels)
    if done:
        svc.state.report(svc.runtime.events, payloads, done, int(svc.runtime.settings.idempotency_ttl))
    return waiting


def _decide(
    svc: Services,
    incoming: Incoming,
    profile: Profile | None,
    snapshot: Snapshot,
    now: datetime,
    waiting: list[Incoming],
) -> _Plan | None:
    """The decision on the channels this job has not handled yet; None when there is nothing to
    do (all handled, or the user is unknown or erased: reported, or put in ``waiting``)."""
    notification = incoming.notification
    if profile is None or profile.erased:
        waited_s = now.timestamp() - incoming.submitted_ms / 1000
        if profile is None and waited_s < svc.runtime.settings.not_ready_max_age:
            waiting.append(incoming)
            return None
        reason = "user_erased" if profile is not None else "unknown_user"
        for channel in notification.wanted_channels():
            incoming.emit(
                "notification.failed",
                {
                    "user_id": notification.user_id,
                    "channel": channel,
                    "notification_ids": [incoming.notification_id],
                    "reason": reason,
                },
            )
            metrics.DECISIONS.labels(channel, "failed", reason).inc()
        return None
    prefs = profile.preferences
    channels = [c for c in notification.wanted_channels() if c not in snapshot.done]
    if not channels:
        return None
    counters: dict[Channel, Counters] = {}
    if prefs.caps.per_hour or prefs.caps.per_day:
        for channel in channels:
            counters[channel] = svc.state.caps(
                notification.user_id, channel, prefs.caps, now, mode="peek"
            ).counters
    asked = notification.model_copy(update={"channels": channels})
    decision = decide(asked, prefs, profile.timezone, now, counters, snapshot.digests, svc.rules)
    item = DigestItem(
        notification_id=incoming.notification_id,
        category=notification.category,
        title=notification.title,
        created_at=now,
        body=notification.body,
        url=notification.url,
        dedupe_key=notification.dedupe_key,
        priority=notification.priority,
    )
    return _Plan(incoming, profile, item, decision)


@dataclass(frozen=True, slots=True)
class _Close:
    """A batch's close to put in the due-time store."""

    due_key: str
    job: FlushJob
    at: datetime


def _put_closes(svc: Services, closes: Sequence[_Close]) -> None:
    """Put the closes in one round trip; then, in one more, the closes a racing send moved
    earlier between our add script and our put."""
    if not closes:
        return
    svc.due.put_many([svc.flush_item(c.due_key, c.job, c.at) for c in closes])
    now_open = svc.state.read_closes([c.job.batch_key for c in closes])
    earlier = [
        svc.flush_item(c.due_key, c.job, current[1])
        for c, current in zip(closes, now_open, strict=True)
        if current is not None and current[0] == c.job.batch_id and current[1] < c.at
    ]
    svc.due.put_many(earlier)


def _deliver_later(svc: Services, plan: _Plan, d: ChannelDecision) -> bool:
    """Whether a delivery waits for the batch's one rate-limit round trip: not an urgent one
    (it may wait in its thread), nor one counted against caps (a script of its own first)."""
    caps = plan.profile.preferences.caps
    return (
        d.action == "deliver"
        and d.reason != "urgent"
        and not (caps.per_hour or caps.per_day)
        and svc.reaches(plan.profile, d.channel)
    )


def _held(events: list[tuple[str, dict[str, Any]]]) -> Emit:
    return lambda kind, data: events.append((kind, data))


def _act(svc: Services, emit: Emit, plan: _Plan, d: ChannelDecision, now: datetime) -> None:
    """Carry out a decision on one channel that did not join a batch straight away."""
    profile, item, notification = plan.profile, plan.item, plan.incoming.notification
    user_id = notification.user_id
    if d.action == "suppress":
        record(
            svc,
            emit,
            user_id=user_id,
            channel=d.channel,
            items=[item],
            outcome="suppressed",
            reason=d.reason,
            extra={"by": d.suppressed_by},
        )
        return
    if not svc.reaches(profile, d.channel):
        # Not worth a batch: nothing could ever be handed over (no address, no device).
        record(
            svc,
            emit,
            user_id=user_id,
            channel=d.channel,
            items=[item],
            outcome="suppressed",
            reason="no_address",
        )
        return
    if d.action == "deliver":
        d = _count_against_caps(svc, profile, notification, item, d, now)
    if d.action == "deliver":
        _deliver_now(svc, emit, profile, item, d, plan.incoming.idempotency_key, now)
        return
    request = _join_request(svc, user_id, item, d, now)
    _put_closes(svc, _joined(svc, emit, user_id, item, d, svc.state.add(request)))


def _count_against_caps(
    svc: Services,
    profile: Profile,
    notification: NotificationSend,
    item: DigestItem,
    d: ChannelDecision,
    now: datetime,
) -> ChannelDecision:
    """Take the cap's room for a delivery; when a racing one took it first, decide again."""
    caps = profile.preferences.caps
    if not (caps.per_hour or caps.per_day):
        return d
    mode = "force" if d.reason == "urgent" else "take"
    check = svc.state.caps(notification.user_id, d.channel, caps, now, mode=mode, member=item.notification_id)
    if check.admitted:
        return d
    opened = svc.state.open_digest(svc.keys.batch(notification.user_id, d.channel))
    again = decide(
        notification.model_copy(update={"channels": [d.channel]}),
        profile.preferences,
        profile.timezone,
        now,
        {d.channel: check.counters},
        {d.channel: opened} if opened else None,
        svc.rules,
    )
    return again.channels[0]


def _deliver_now(
    svc: Services,
    emit: Emit,
    profile: Profile,
    item: DigestItem,
    d: ChannelDecision,
    idempotency_key: str,
    now: datetime,
    *,
    wait_s: float | None = None,
) -> None:
    """Hand over now, or hold until the rate limits have room (``wait_s``: the limiter's answer,
    when the caller asked it already)."""
    key = "notif:" + hashlib.sha256(f"send:{idempotency_key}:{d.channel}".encode()).hexdigest()[:32]
    if wait_s is None:
        patience_s = URGENT_PATIENCE_S if d.reason == "urgent" else 0.0
        wait_s = svc.rate_wait_s(profile.user_id, patience_s=patience_s)
    if wait_s <= 0:
        hand_over(svc, profile, Delivery(d.channel, Single(item), (item,), key), emit, d.reason)
        return
    # Over a rate limit: a batch of its own (the urgent must not wait in a digest), closed when
    # the limiter has room.
    delivery_id = key.removeprefix("notif:")
    batch_key = svc.keys.direct(delivery_id)
    added = svc.state.add(
        AddRequest(
            key=batch_key,
            item=item,
            user_id=profile.user_id,
            channel=d.channel,
            now=now,
            close_at=now,
            max_items=1,
            where_ttl_s=svc.runtime.settings.idempotency_ttl,
            direct=True,
        )
    )
    job = FlushJob(
        user_id=profile.user_id,
        channel=d.channel,
        batch_key=batch_key,
        batch_id=added.batch_id,
        urgent=d.reason == "urgent",
    )
    delay_for_rate(svc, emit, job, svc.keys.direct_due(delivery_id), [item], wait_s, now)


def _join_request(
    svc: Services, user_id: str, item: DigestItem, d: ChannelDecision, now: datetime
) -> AddRequest:
    assert d.until is not None
    return AddRequest(
        key=svc.keys.batch(user_id, d.channel),
        item=item,
        user_id=user_id,
        channel=d.channel,
        now=now,
        close_at=d.until,
        max_items=svc.rules.max_items,
        where_ttl_s=svc.runtime.settings.idempotency_ttl,
    )


def _joined(
    svc: Services,
    emit: Emit,
    user_id: str,
    item: DigestItem,
    d: ChannelDecision,
    added: Added,
) -> list[_Close]:
    """Record ``item`` joining the user's batch; return the batch's close to put in the due-time
    store when it is new or earlier (`_put_closes`)."""
    assert d.until is not None
    closes: list[_Close] = []
    if added.moved:
        batch_key = svc.keys.batch(user_id, d.channel)
        job = FlushJob(user_id=user_id, channel=d.channel, batch_key=batch_key, batch_id=added.batch_id)
        closes.append(_Close(svc.keys.flush_due(user_id, d.channel), job, added.close_at))
    extra: dict[str, Any] = {"digest": d.action == "digest"}
    if d.cap is not None:
        extra["cap"] = d.cap
    record(
        svc,
        emit,
        user_id=user_id,
        channel=d.channel,
        items=[item],
        outcome="deferred",
        reason=d.reason,
        until=added.close_at if d.action == "digest" else d.until,
        extra=extra,
    )
    return closes
