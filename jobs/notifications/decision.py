"""What happens to a notification on each channel: a pure function of the notification, the
user's preferences and zone, the time, and the user's recent delivery counts.

The rules, in this order, per channel:
  1. channel off for the user, or for the category: suppress (``preference``);
  2. ``urgent``: deliver now, past do-not-disturb, quiet hours, digest and caps (``urgent``);
  3. do-not-disturb: hold until ``dnd_until`` (``dnd``);
  4. quiet hours: hold until they end in the user's zone (``quiet_hours``);
  5. ``high``: deliver now (``high``) unless a cap is reached;
  6. ``low``/``normal``: join the digest (``digest``); with digest ``off``, deliver now
     (``digest_off``) unless a cap is reached;
  7. a cap reached: join the digest (``cap``); with digest ``off``, hold until the cap's window
     has room and then go out together as one digest (``cap``). Nothing is dropped for a cap.

A held notification is decided again at its ``until``. A closed digest (or a batch held for a
cap) is one delivery: `decide_batch` says whether it goes out now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from jobs.notifications.clock import digest_closes_at, quiet_until
from jobs.notifications.models import CapName, Channel, NotificationSend
from jobs.notifications.preferences import Preferences
from worker.settings import Settings

Action = Literal["deliver", "hold", "digest", "suppress"]
Reason = Literal["preference", "urgent", "dnd", "quiet_hours", "high", "digest", "digest_off", "cap"]
_CAP_WINDOWS: dict[CapName, timedelta] = {"per_hour": timedelta(hours=1), "per_day": timedelta(days=1)}
# The longer window first: when both caps are reached, the day's is the one that waits longer.
_CAPS: tuple[CapName, ...] = ("per_day", "per_hour")


@dataclass(frozen=True, slots=True)
class Counters:
    """The user's deliveries on one channel in the last hour and day (supplied by the caller).

    ``*_room_at``: when that window next has room (a sliding window: its oldest delivery plus
    the window; a fixed one: the window's end). Unknown: a whole window from now, which is
    always late enough.
    """

    last_hour: int = 0
    last_day: int = 0
    hour_room_at: datetime | None = None
    day_room_at: datetime | None = None

    def count(self, cap: CapName) -> int:
        return self.last_hour if cap == "per_hour" else self.last_day

    def room_at(self, cap: CapName, now: datetime) -> datetime:
        known = self.hour_room_at if cap == "per_hour" else self.day_room_at
        return known if known is not None and known > now else now + _CAP_WINDOWS[cap]


@dataclass(frozen=True, slots=True)
class OpenDigest:
    """The user's digest on one channel that is collecting items: since when, and how many."""

    opened_at: datetime
    size: int


@dataclass(frozen=True, slots=True)
class DigestRules:
    """TASKMASTER_DIGEST_WINDOW and TASKMASTER_DIGEST_MAX_ITEMS."""

    window_s: float = 300.0
    max_items: int = 50

    @classmethod
    def from_settings(cls, settings: Settings) -> DigestRules:
        return cls(window_s=settings.digest_window, max_items=settings.digest_max_items)


DEFAULT_RULES = DigestRules()


@dataclass(frozen=True, slots=True)
class DigestKey:
    """A digest collects one user's items for one channel."""

    user_id: str
    channel: Channel


@dataclass(frozen=True, slots=True)
class ChannelDecision:
    channel: Channel
    action: Action
    reason: Reason
    # When a hold ends or the digest closes (aware, UTC); None for deliver and suppress.
    until: datetime | None = None
    # Set when the notification joins a digest, or a cap batch that goes out as one.
    digest_key: DigestKey | None = None
    # For ``preference``: whether the channel or the category choice suppressed it.
    suppressed_by: Literal["channel", "category"] | None = None
    # For ``cap``: the cap that is reached (per_day when both are).
    cap: CapName | None = None
    # The digest this item joins is full with it and closes now.
    closes_digest: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    user_id: str
    category: str
    channels: tuple[ChannelDecision, ...] = field(default=())

    def for_channel(self, channel: Channel) -> ChannelDecision | None:
        return next((d for d in self.channels if d.channel == channel), None)


def decide(
    notification: NotificationSend,
    prefs: Preferences,
    tz: ZoneInfo,
    now: datetime,
    counters: Mapping[Channel, Counters] | None = None,
    digests: Mapping[Channel, OpenDigest] | None = None,
    rules: DigestRules = DEFAULT_RULES,
) -> Decision:
    """The decision on every channel the notification asks for (all channels when it names none)."""
    now = _utc(now)
    counters = counters or {}
    digests = digests or {}
    return Decision(
        user_id=notification.user_id,
        category=notification.category,
        channels=tuple(
            _decide_channel(
                notification, channel, prefs, tz, now, counters.get(channel), digests.get(channel), rules
            )
            for channel in notification.wanted_channels()
        ),
    )


def _decide_channel(
    notification: NotificationSend,
    channel: Channel,
    prefs: Preferences,
    tz: ZoneInfo,
    now: datetime,
    counters: Counters | None,
    open_digest: OpenDigest | None,
    rules: DigestRules,
) -> ChannelDecision:
    if not prefs.channel_on(channel):
        return ChannelDecision(channel, "suppress", "preference", suppressed_by="channel")
    if prefs.category_choice(notification.category, channel) is False:
        return ChannelDecision(channel, "suppress", "preference", suppressed_by="category")
    if notification.priority == "urgent":
        return ChannelDecision(channel, "deliver", "urgent")
    held = _held(prefs, tz, now)
    if held is not None:
        return ChannelDecision(channel, "hold", held[0], until=held[1])
    cap = reached_cap(prefs, counters)
    key = DigestKey(notification.user_id, channel)
    if notification.priority == "high" and cap is None:
        return ChannelDecision(channel, "deliver", "high")
    if prefs.digest == "off":
        if cap is None:
            return ChannelDecision(channel, "deliver", "digest_off")
        until = _room_at(prefs, counters or Counters(), now)
        return ChannelDecision(channel, "hold", "cap", until=until, digest_key=key, cap=cap)
    until, full = _digest_close(prefs, tz, now, open_digest, rules)
    if notification.priority == "high":  # only here because a cap is reached (rule 7)
        return ChannelDecision(
            channel, "digest", "cap", until=until, digest_key=key, cap=cap, closes_digest=full
        )
    return ChannelDecision(channel, "digest", "digest", until=until, digest_key=key, closes_digest=full)


def decide_batch(
    user_id: str,
    channel: Channel,
    prefs: Preferences,
    tz: ZoneInfo,
    now: datetime,
    counters: Counters | None = None,
) -> ChannelDecision:
    """Whether a closed digest, or a batch held for a cap, goes out now as one delivery.

    It waits for do-not-disturb, quiet hours and a reached cap like any notification that is not
    urgent; it stays one batch and is decided again at ``until``. Held for a cap, it is the
    batch of its ``digest_key``: while it waits, what else reaches the cap for that key (a later
    digest closing, a notification held with digest off) joins it rather than waiting apart, so
    that the room, once there, sends all of it as one (rule 7: into the next digest).
    """
    now = _utc(now)
    key = DigestKey(user_id, channel)
    held = _held(prefs, tz, now)
    if held is not None:
        return ChannelDecision(channel, "hold", held[0], until=held[1], digest_key=key)
    cap = reached_cap(prefs, counters)
    if cap is not None:
        until = _room_at(prefs, counters or Counters(), now)
        return ChannelDecision(channel, "hold", "cap", until=until, digest_key=key, cap=cap)
    return ChannelDecision(channel, "deliver", "digest", digest_key=key)


def reached_cap(prefs: Preferences, counters: Counters | None) -> CapName | None:
    """The cap with no room left, or None."""
    if counters is None:
        return None
    for name in _CAPS:
        limit = _limit(prefs, name)
        if limit is not None and counters.count(name) >= limit:
            return name
    return None


def _limit(prefs: Preferences, cap: CapName) -> int | None:
    return prefs.caps.per_hour if cap == "per_hour" else prefs.caps.per_day


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware: a naive time would be read as the machine's zone")
    return now.astimezone(UTC)


def _held(prefs: Preferences, tz: ZoneInfo, now: datetime) -> tuple[Reason, datetime] | None:
    if prefs.dnd_until is not None and prefs.dnd_active(now):
        return "dnd", prefs.dnd_until
    quiet_end = quiet_until(prefs.quiet_hours, tz, now)
    if quiet_end is not None:
        return "quiet_hours", quiet_end
    return None


def _room_at(prefs: Preferences, counters: Counters, now: datetime) -> datetime:
    """When every reached cap has room again."""
    times = [now]
    for name in _CAPS:
        limit = _limit(prefs, name)
        if limit is not None and counters.count(name) >= limit:
            times.append(counters.room_at(name, now))
    return max(times)


def _digest_close(
    prefs: Preferences, tz: ZoneInfo, now: datetime, open_digest: OpenDigest | None, rules: DigestRules
) -> tuple[datetime, bool]:
    """When the digest this item joins closes, and whether the item fills it."""
    opened_at = now if open_digest is None else open_digest.opened_at
    size = 0 if open_digest is None else open_digest.size
    if size + 1 >= rules.max_items:
        return now, True
    closes = digest_closes_at(prefs.digest, tz, opened_at, window_s=rules.window_s, digest_at=prefs.digest_at)
    return max(closes, now), False
