"""Handing one delivery (a single notification or a digest) to the email, push or webhook channel.

Each channel's own job does the sending; here we only enqueue it with an idempotency key that
the caller derives from the notification's envelope or the flush, so a retried caller never
hands the same delivery on twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from jobs.notifications.digest import DigestItem, DigestView, Single, render_text
from jobs.notifications.models import Channel
from worker.errors import TaskmasterError
from worker.logging import get_logger
from worker.submit import enqueue

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = get_logger(__name__)

Outcome = Literal["sent", "duplicate", "no_target"]
# FCM shows a few lines; the whole digest is in the app and the email.
_PUSH_BODY_CHARS = 1000


class ChannelError(TaskmasterError):
    """A delivery could not be handed to its channel."""


class Recipient(Protocol):
    """What a delivery needs of the user's profile (jobs.notifications.profiles.Profile)."""

    @property
    def user_id(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def timezone(self) -> ZoneInfo: ...
    @property
    def push_tokens(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message for one user on one channel: ``message`` from digest.compose."""

    channel: Channel
    message: Single | DigestView
    items: tuple[DigestItem, ...]
    key: str  # idempotency key of the hand-over

    @property
    def notification_ids(self) -> list[str]:
        return [item.notification_id for item in self.items]

    @property
    def digest(self) -> bool:
        return isinstance(self.message, DigestView)

    @property
    def urgent(self) -> bool:
        return any(item.priority == "urgent" for item in self.items)


def has_target(recipient: Recipient, channel: Channel) -> bool:
    """Whether the user has an address there (webhook endpoints: ``Services.reaches``)."""
    if channel == "email":
        return bool(recipient.email)
    if channel == "push":
        return bool(recipient.push_tokens)
    return True


def deliver(runtime: Runtime, recipient: Recipient, delivery: Delivery) -> Outcome:
    """Enqueue the channel's job for ``delivery``; "no_target" when the user has no address there."""
    if delivery.channel == "email":
        return _email(runtime, recipient, delivery)
    if delivery.channel == "push":
        return _push(runtime, recipient, delivery)
    return _webhook(runtime, recipient, delivery)


def _enqueue(runtime: Runtime, job_name: str, data: dict[str, Any], delivery: Delivery) -> Outcome:
    job_type = runtime.registry.get(job_name)
    if job_type is None:
        raise ChannelError(f"{job_name} is not loaded: add its module to TASKMASTER_JOB_MODULES")
    outcome = enqueue(
        runtime.redis,
        runtime.keys,
        job_type,
        data,
        idempotency_key=delivery.key,
        idempotency_ttl_s=runtime.settings.idempotency_ttl,
        job_id=delivery.key,
        # An urgent notification's hand-over must not wait behind ordinary work either.
        queue="urgent" if delivery.urgent else None,
    )
    return "sent" if outcome == "enqueued" else "duplicate"


def _email(runtime: Runtime, recipient: Recipient, delivery: Delivery) -> Outcome:
    if not recipient.email:
        return "no_target"
    message = delivery.message
    if isinstance(message, Single):
        item = message.item
        variables: dict[str, Any] = {"title": item.title, "message": item.body or item.title}
        if item.url:
            variables["action_url"] = item.url
        template = "system"
    else:
        variables = {
            "items": [
                {
                    "category": i.category,
                    "title": i.title,
                    "at": i.created_at.isoformat(),
                    "body": i.body,
                    **({"url": i.url} if i.url else {}),
                }
                for i in _kept(delivery)
            ],
            "timezone": recipient.timezone.key,
            **({"user_name": recipient.name} if recipient.name else {}),
        }
        template = "digest"
    data = {
        "to": recipient.email,
        "template": template,
        "variables": variables,
        "tags": ["notification"],
        "metadata": {"notification_ids": delivery.notification_ids[:50]},
    }
    return _enqueue(runtime, "email.send", data, delivery)


def _kept(delivery: Delivery) -> list[DigestItem]:
    """The items a digest lists (after dedupe_key replacement), newest first."""
    message = delivery.message
    assert isinstance(message, DigestView)
    listed = {view.notification_id for group in message.groups for view in group.items}
    kept = [item for item in delivery.items if item.notification_id in listed]
    return sorted(kept, key=lambda i: i.created_at, reverse=True)


def _push(runtime: Runtime, recipient: Recipient, delivery: Delivery) -> Outcome:
    if not recipient.push_tokens:
        return "no_target"
    message = delivery.message
    if isinstance(message, Single):
        item = message.item
        data: dict[str, Any] = {
            "user_id": recipient.user_id,
            "title": item.title,
            "body": item.body[:_PUSH_BODY_CHARS],
            "notification_id": item.notification_id[:128],
        }
        if item.url:
            data["url"] = item.url
    else:
        data = {
            "user_id": recipient.user_id,
            "title": message.subject[:1024],
            "body": render_text(message)[:_PUSH_BODY_CHARS],
        }
    return _enqueue(runtime, "push.send", data, delivery)


def _webhook(runtime: Runtime, recipient: Recipient, delivery: Delivery) -> Outcome:
    from jobs.webhooks import enqueue_delivery

    items = [
        {
            "notification_id": i.notification_id,
            "category": i.category,
            "title": i.title,
            "body": i.body,
            "url": i.url,
            "at": i.created_at.isoformat(),
        }
        for i in delivery.items
    ]
    categories = {i.category for i in delivery.items}
    count = enqueue_delivery(
        runtime,
        user_id=recipient.user_id,
        category=next(iter(categories)) if len(categories) == 1 else None,
        event_type="notification.digest" if delivery.digest else "notification",
        payload={"user_id": recipient.user_id, "digest": delivery.digest, "items": items},
        message_id=delivery.key,
    )
    return "sent" if count else "no_target"
