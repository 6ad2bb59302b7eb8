"""The notification.send flow: decide on every channel, then deliver, hold or batch each.

The decision is `decide` (pure); this module feeds it the user's profile, the open batches and
the cap counters from Redis, and carries it out. Holds and digest items join the user's batch
for that channel, whose close is a DueStore item (flush.py). An immediate delivery passes the
rate limits first; over a limit it waits in a batch of its own, never dropped.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

from jobs.notifications import metrics
from jobs.notifications.channels import Delivery
from jobs.notifications.decision import ChannelDecision, Counters, decide
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
from worker.errors import NotReady
from worker.events import Emitter
from worker.logging import get_logger

log = get_logger(__name__)

# An urgent delivery over a rate limit waits in its worker thread when the limiter frees room
# within this long: through the due-time store it would take a release and two more jobs.
URGENT_PATIENCE_S = 0.5


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
    now = now or datetime.now(UTC)
    settings = svc.runtime.settings
    item = DigestItem(
        notification_id=notification_id,
        category=notification.category,
        title=notification.title,
        created_at=now,
        body=notification.body,
        url=notification.url,
        dedupe_key=notification.dedupe_key,
        priority=notification.priority,
    )
    started = time.perf_counter()
    token, done, digests = svc.state.snapshot(
        notification.user_id, notification.wanted_channels(), idempotency_key
    )
    profile = svc.profiles.get(svc.runtime.reader, notification.user_id, token)
    if profile is None or profile.erased:
        waited_s = now.timestamp() - submitted_ms / 1000
        if profile is None and waited_s < settings.not_ready_max_age:
            raise NotReady(f"user {notification.user_id!r} is not known yet")
        reason = "user_erased" if profile is not None else "unknown_user"
        for channel in notification.wanted_channels():
            emit(
                "notification.failed",
                {
                    "user_id": notification.user_id,
                    "channel": channel,
                    "notification_ids": [notification_id],
                    "reason": reason,
                },
            )
            metrics.DECISIONS.labels(channel, "failed", reason).inc()
        return
    metrics.RECEIVED.labels(notification.priority).inc()
    prefs = profile.preferences
    channels = [c for c in notification.wanted_channels() if c not in done]
    counters: dict[Channel, Counters] = {}
    if prefs.caps.per_hour or prefs.caps.per_day:
        for channel in channels:
            counters[channel] = svc.state.caps(
                notification.user_id, channel, prefs.caps, now, mode="peek"
            ).counters
    asked = notification.model_copy(update={"channels": channels}) if channels else None
    decision = decide(asked, prefs, profile.timezone, now, counters, digests, svc.rules) if asked else None
    metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
    if decision is None:
        return
    # Each channel's events wait for the end: they go out with the channels' done marks in one
    # atomic round trip, after the log rows are committed. A job that dies before that is decided
    # again on every channel, which acting makes no worse (a batch holds a notification once,
    # a cap counts it once, a hand-over is enqueued once by its key); none is reported twice.
    events: list[tuple[str, dict[str, Any]]] = []
    with logged_together(svc):
        for d in decision.channels:
            _act(svc, _held(events), profile, notification, item, d, idempotency_key, now)
    payloads: list[str] = []
    for kind, data in events:
        if isinstance(emit, Emitter):
            payloads.append(emit.encode(kind, data))
        else:  # a plain callable (tests): it takes the events, the script the marks
            emit(kind, data)
    svc.state.report(
        svc.runtime.events,
        payloads,
        idempotency_key,
        [d.channel for d in decision.channels],
        int(settings.idempotency_ttl),
    )


def _held(events: list[tuple[str, dict[str, Any]]]) -> Emit:
    return lambda kind, data: events.append((kind, data))


def _act(
    svc: Services,
    emit: Emit,
    profile: Profile,
    notification: NotificationSend,
    item: DigestItem,
    d: ChannelDecision,
    idempotency_key: str,
    now: datetime,
) -> None:
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
        _deliver_now(svc, emit, profile, item, d, idempotency_key, now)
        return
    _join_batch(svc, emit, user_id, item, d, now)


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
) -> None:
    key = "notif:" + hashlib.sha256(f"send:{idempotency_key}:{d.channel}".encode()).hexdigest()[:32]
    wait_s = svc.rate_wait_s(profile.user_id, patience_s=URGENT_PATIENCE_S if d.reason == "urgent" else 0.0)
    if wait_s <= 0:
        hand_over(svc, profile, Delivery(d.channel, Single(item), (item,), key), emit, d.reason)
        return
    # Over a rate limit: a batch of its own (the urgent must not wait in a digest), closed when
    # the limiter has room.
    delivery_id = key.removeprefix("notif:")
    batch_key = svc.keys.direct(delivery_id)
    added = svc.state.add(
        batch_key,
        item,
        user_id=profile.user_id,
        channel=d.channel,
        now=now,
        close_at=now,
        max_items=1,
        where_ttl_s=svc.runtime.settings.idempotency_ttl,
        direct=True,
    )
    job = FlushJob(
        user_id=profile.user_id,
        channel=d.channel,
        batch_key=batch_key,
        batch_id=added.batch_id,
        urgent=d.reason == "urgent",
    )
    delay_for_rate(svc, emit, job, svc.keys.direct_due(delivery_id), [item], wait_s, now)


def _join_batch(
    svc: Services, emit: Emit, user_id: str, item: DigestItem, d: ChannelDecision, now: datetime
) -> None:
    assert d.until is not None
    batch_key = svc.keys.batch(user_id, d.channel)
    added = svc.state.add(
        batch_key,
        item,
        user_id=user_id,
        channel=d.channel,
        now=now,
        close_at=d.until,
        max_items=svc.rules.max_items,
        where_ttl_s=svc.runtime.settings.idempotency_ttl,
    )
    if added.moved:
        job = FlushJob(user_id=user_id, channel=d.channel, batch_key=batch_key, batch_id=added.batch_id)
        svc.put_flush(svc.keys.flush_due(user_id, d.channel), job, added.close_at)
        # A racing send may have moved the close earlier between our script and our put.
        now_open = svc.state.read_close(batch_key)
        if now_open is not None and now_open[0] == added.batch_id and now_open[1] < added.close_at:
            svc.put_flush(svc.keys.flush_due(user_id, d.channel), job, now_open[1])
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
