"""A human sentence per channel for what a notification would do, from the same `decide`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from jobs.notifications.clock import local_label, quiet_until
from jobs.notifications.decision import (
    DEFAULT_RULES,
    ChannelDecision,
    Counters,
    Decision,
    DigestRules,
    OpenDigest,
    decide,
)
from jobs.notifications.models import CapName, Channel, NotificationSend
from jobs.notifications.preferences import Preferences

_CAP_UNITS: dict[CapName, str] = {"per_hour": "hour", "per_day": "day"}


@dataclass(frozen=True, slots=True)
class Explanation:
    channel: Channel
    sentence: str
    decision: ChannelDecision

    def line(self) -> str:
        return f"{self.channel}: {self.sentence}"


def explain(
    notification: NotificationSend,
    prefs: Preferences,
    tz: ZoneInfo,
    now: datetime,
    counters: Mapping[Channel, Counters] | None = None,
    digests: Mapping[Channel, OpenDigest] | None = None,
    rules: DigestRules = DEFAULT_RULES,
) -> list[Explanation]:
    """What ``decide`` would do with the notification now, one sentence per channel."""
    decision = decide(notification, prefs, tz, now, counters, digests, rules)
    return describe(decision, prefs, tz, now)


def describe(decision: Decision, prefs: Preferences, tz: ZoneInfo, now: datetime) -> list[Explanation]:
    return [
        Explanation(d.channel, sentence(d, decision.category, prefs, tz, now), d) for d in decision.channels
    ]


def sentence(d: ChannelDecision, category: str, prefs: Preferences, tz: ZoneInfo, now: datetime) -> str:
    if d.action == "suppress":
        if d.suppressed_by == "category":
            return f"suppressed by the user's choice for category '{category}' on {d.channel}"
        return f"suppressed by the user's choice: {d.channel} is off"
    if d.action == "deliver":
        return "would send now" + _passed(d, prefs, tz, now)
    assert d.until is not None, "holds and digests always carry until"
    when = local_label(d.until, tz, now)
    if d.action == "digest":
        closing = "closing now, full" if d.closes_digest else f"closing at {when}"
        cause = f", as the {_cap(d.cap, prefs)} is reached" if d.reason == "cap" else ""
        return f"would join the digest {closing}{cause}"
    if d.reason == "dnd":
        return f"would hold until {when} for do-not-disturb"
    if d.reason == "quiet_hours":
        return f"would hold until {when} for quiet hours"
    return f"would hold until {when} for the {_cap(d.cap, prefs)}, then send the held ones as one digest"


def _passed(d: ChannelDecision, prefs: Preferences, tz: ZoneInfo, now: datetime) -> str:
    """For an urgent notification, what it passes that would have held another one."""
    if d.reason != "urgent":
        return ""
    if prefs.dnd_active(now):
        return " (urgent: passes do-not-disturb)"
    if quiet_until(prefs.quiet_hours, tz, now) is not None:
        return " (urgent: passes quiet hours)"
    return ""


def _cap(cap: CapName | None, prefs: Preferences) -> str:
    if cap is None:
        return "cap"
    limit = prefs.caps.per_hour if cap == "per_hour" else prefs.caps.per_day
    return f"cap of {limit} per {_CAP_UNITS[cap]}"
