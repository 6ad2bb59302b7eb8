"""Every Redis key of the notification sending side, in one place (under TASKMASTER_REDIS_PREFIX)."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobs.notifications.models import Channel


@dataclass(frozen=True, slots=True)
class NotifKeys:
    prefix: str
    # What every key below starts with. The batch scripts of state.lua take it and build the
    # profile, done, batch and where keys themselves, in these shapes.
    root: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", f"{self.prefix}:notif:")

    def batch(self, user_id: str, channel: Channel) -> str:
        """Hash: the open batch of one user and channel (items and ``m:*`` meta fields)."""
        return f"{self.root}batch:{user_id}:{channel}"

    def direct(self, delivery_id: str) -> str:
        """Hash: one delivery waiting for the rate limiter, in the shape of a batch."""
        return f"{self.root}direct:{delivery_id}"

    def flushing(self, batch_id: str) -> str:
        """Hash: a batch claimed by a flush, kept until its delivery is handed on."""
        return f"{self.root}flushing:{batch_id}"

    def caps(self, user_id: str, channel: Channel) -> str:
        """Sorted set: the user's deliveries on a channel in the last day (member -> ms)."""
        return f"{self.root}caps:{user_id}:{channel}"

    def where(self, notification_id: str) -> str:
        """Hash: channel -> "<batch key>\\n<field>" of a held notification, for cancel by id."""
        return f"{self.root}where:{notification_id}"

    def profile(self, user_id: str) -> str:
        """String: a token naming the current version of the user's profile (ProfileCache)."""
        return f"{self.root}profile:{user_id}"

    def done(self, idempotency_key: str, channel: Channel) -> str:
        """Marks a channel of a notification.send as handled, so a retry skips it."""
        return f"{self.root}done:{idempotency_key}:{channel}"

    @staticmethod
    def flush_due(user_id: str, channel: Channel) -> str:
        """The DueStore item that closes the open batch; putting it again moves the close."""
        return f"notif:flush:{user_id}:{channel}"

    @staticmethod
    def direct_due(delivery_id: str) -> str:
        return f"notif:direct:{delivery_id}"

    @staticmethod
    def rate_user(user_id: str) -> str:
        return f"notif:user:{user_id}"

    rate_global = "notif:global"
