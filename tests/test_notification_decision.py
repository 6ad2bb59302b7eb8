"""The delivery decision (jobs/notifications/decision.py) and its explanation (explain.py).

Unless a test says otherwise: user in Europe/Berlin, now 2026-06-15 10:00Z (12:00 local), email.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from jobs.notifications.decision import (
    ChannelDecision,
    Counters,
    DigestKey,
    DigestRules,
    OpenDigest,
    decide,
    decide_batch,
)
from jobs.notifications.explain import explain
from jobs.notifications.models import NotificationSend, PreferencesUpdate
from jobs.notifications.preferences import Preferences, merge
from worker.settings import load_settings

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def prefs(**fields: Any) -> Preferences:
    return merge(Preferences(), PreferencesUpdate.model_validate({"user_id": "u1", **fields}))


def note(priority: str = "normal", category: str = "task.reminder", **fields: Any) -> NotificationSend:
    data = {"user_id": "u1", "category": category, "title": "Pay rent", "priority": priority}
    return NotificationSend.model_validate({"channels": ["email"], **data, **fields})


def email(
    notification: NotificationSend,
    preferences: Preferences,
    now: datetime = NOW,
    counters: Counters | None = None,
    open_digest: OpenDigest | None = None,
) -> ChannelDecision:
    decision = decide(
        notification,
        preferences,
        BERLIN,
        now,
        counters={"email": counters} if counters else None,
        digests={"email": open_digest} if open_digest else None,
    )
    (only,) = decision.channels
    return only


EMAIL_OFF = {"channels": {"email": False}}
MARKETING_OFF = {"categories": {"marketing": {"email": False}}}
DND = {"dnd_until": "2026-06-15T11:30:00Z"}
QUIET = {"quiet_hours": {"start": "11:00", "end": "13:30"}}  # 12:00 local is quiet until 11:30Z
CAP3 = {"caps": {"per_hour": 3}}
FULL_HOUR = Counters(last_hour=3, last_day=3, hour_room_at=utc("2026-06-15 10:20"))
ROOM = Counters(last_hour=2, last_day=2)
OFF = {"digest": "off"}

MARKETING = {"category": "marketing"}  # the notification's category, not a preference


def at(hhmm: str) -> datetime:
    """A time of 2026-06-15 in UTC (or a full 'YYYY-MM-DD HH:MM')."""
    return utc(hhmm if " " in hhmm else f"2026-06-15 {hhmm}")


# (case, priority, preferences, counters, expected "action reason [until UTC]")
TABLE: list[tuple[str, str, dict[str, Any], Counters | None, str]] = [
    # 1. A channel off for the user or for the category suppresses, whatever the priority.
    ("channel off beats urgent", "urgent", EMAIL_OFF, None, "suppress preference"),
    ("category off beats urgent", "urgent", {**MARKETING_OFF, **MARKETING}, None, "suppress preference"),
    ("category off, low", "low", {**MARKETING_OFF, **MARKETING}, None, "suppress preference"),
    ("another category off", "low", {**MARKETING_OFF, **OFF}, None, "deliver digest_off"),
    (
        "category on cannot undo channel off",
        "high",
        {**EMAIL_OFF, "categories": {"marketing": {"email": True}}, **MARKETING},
        None,
        "suppress preference",
    ),
    # 2. Urgent passes do-not-disturb, quiet hours, digest and caps.
    ("urgent passes all", "urgent", {**DND, **QUIET, **CAP3, **OFF}, FULL_HOUR, "deliver urgent"),
    ("urgent passes digest", "urgent", {"digest": "daily", "digest_at": "08:00"}, None, "deliver urgent"),
    # 3. Do-not-disturb holds everything else, before quiet hours and caps.
    ("dnd holds high", "high", DND, None, "hold dnd 11:30"),
    ("dnd before quiet", "low", {"dnd_until": "2026-06-15T12:30:00Z", **QUIET}, None, "hold dnd 12:30"),
    ("dnd before cap", "high", {**DND, **CAP3}, FULL_HOUR, "hold dnd 11:30"),
    ("dnd over", "high", {"dnd_until": "2026-06-15T09:00:00Z"}, None, "deliver high"),
    # 4. Quiet hours hold until they end, before priority, digest and caps.
    ("quiet holds high", "high", QUIET, None, "hold quiet_hours 11:30"),
    ("quiet holds normal", "normal", {**QUIET, **OFF}, None, "hold quiet_hours 11:30"),
    ("quiet before cap", "low", {**QUIET, **CAP3, **OFF}, FULL_HOUR, "hold quiet_hours 11:30"),
    # 5. High goes now unless a cap is reached; then it joins the digest.
    ("high now", "high", {}, None, "deliver high"),
    ("high under the cap", "high", CAP3, ROOM, "deliver high"),
    ("high capped: digest", "high", CAP3, FULL_HOUR, "digest cap 10:05"),
    # 6. Low and normal join the digest of the user's mode; digest off delivers unless capped.
    ("normal window", "normal", {}, None, "digest digest 10:05"),
    ("low hourly", "low", {"digest": "hourly"}, None, "digest digest 11:00"),
    (
        "normal daily",
        "normal",
        {"digest": "daily", "digest_at": "08:00"},
        None,
        "digest digest 2026-06-16 06:00",
    ),
    ("normal digest off", "normal", OFF, None, "deliver digest_off"),
    ("low digest off, under cap", "low", {**CAP3, **OFF}, ROOM, "deliver digest_off"),
    ("normal capped still digests", "normal", CAP3, FULL_HOUR, "digest digest 10:05"),
    # 7. With digest off a cap holds until its window has room.
    ("high capped, digest off", "high", {**CAP3, **OFF}, FULL_HOUR, "hold cap 10:20"),
    ("low capped, digest off", "low", {**CAP3, **OFF}, FULL_HOUR, "hold cap 10:20"),
]


def run_row(priority: str, given: dict[str, Any], counters: Counters | None) -> ChannelDecision:
    choices = dict(given)
    category = choices.pop("category", "task.reminder")
    return email(note(priority, category), prefs(**choices), counters=counters)


@pytest.mark.parametrize(
    ("case", "priority", "given", "counters", "expected"), TABLE, ids=[r[0] for r in TABLE]
)
def test_decision_table(
    case: str, priority: str, given: dict[str, Any], counters: Counters | None, expected: str
) -> None:
    """Each rule, and the order in which they apply, for each priority where it matters."""
    action, reason, *until = expected.split(" ", 2)
    got = run_row(priority, given, counters)
    assert (got.channel, got.action, got.reason) == ("email", action, reason)
    assert got.until == (at(until[0]) if until else None)
    joins = action == "digest" or reason == "cap"
    assert got.digest_key == (DigestKey("u1", "email") if joins else None)


# Priority x digest mode x cap, outside dnd and quiet hours: (digest on, on + capped, off, off + capped).
MATRIX = {
    "urgent": ("deliver urgent", "deliver urgent", "deliver urgent", "deliver urgent"),
    "high": ("deliver high", "digest cap", "deliver high", "hold cap"),
    "normal": ("digest digest", "digest digest", "deliver digest_off", "hold cap"),
    "low": ("digest digest", "digest digest", "deliver digest_off", "hold cap"),
}


@pytest.mark.parametrize("priority", list(MATRIX))
@pytest.mark.parametrize("mode", ["window", "hourly", "daily"])
def test_priority_by_digest_mode_by_cap(priority: str, mode: str) -> None:
    """Every priority against every digest mode, with and without a cap reached."""
    on = {"digest": mode, "digest_at": "08:00"} if mode == "daily" else {"digest": mode}
    cases = [(on, ROOM), (on, FULL_HOUR), (OFF, ROOM), (OFF, FULL_HOUR)]
    got = [run_row(priority, {**given, **CAP3}, counters) for given, counters in cases]
    assert [f"{d.action} {d.reason}" for d in got] == list(MATRIX[priority])


def test_every_hold_and_digest_carries_an_aware_utc_until() -> None:
    """Holds and digests say until when, in UTC; deliveries and suppressions do not."""
    for _, priority, given, counters, expected in TABLE:
        got = run_row(priority, given, counters)
        if expected.startswith(("hold", "digest")):
            assert got.until is not None and got.until.utcoffset() == timedelta(0)
        else:
            assert got.until is None


def test_a_digest_already_open_keeps_its_close_time_and_closes_early_when_full() -> None:
    """The window runs from the first item; the item that makes max_items closes it now."""
    opened = OpenDigest(opened_at=utc("2026-06-15 09:58"), size=3)
    assert email(note(), prefs(), open_digest=opened).until == utc("2026-06-15 10:03")
    full = email(note(), prefs(), open_digest=OpenDigest(opened_at=utc("2026-06-15 09:58"), size=49))
    assert (full.action, full.until, full.closes_digest) == ("digest", NOW, True)
    rules = DigestRules.from_settings(load_settings({"TASKMASTER_DIGEST_WINDOW": "2m"}))
    decision = decide(note(), prefs(), BERLIN, NOW, rules=rules)
    assert decision.channels[0].until == utc("2026-06-15 10:02")


def test_caps_deliver_then_digest_then_with_digest_off_hold_until_room() -> None:
    """A cap of 2 an hour: two go out, the third joins the digest, or waits for room with digest off."""
    capped = prefs(caps={"per_hour": 2})
    sent = [email(note("high"), capped, counters=Counters(last_hour=n, last_day=n)) for n in range(3)]
    assert [(d.action, d.reason) for d in sent] == [
        ("deliver", "high"),
        ("deliver", "high"),
        ("digest", "cap"),
    ]
    assert sent[2].cap == "per_hour"
    room = utc("2026-06-15 10:41")
    held = email(
        note("high"), prefs(caps={"per_hour": 2}, digest="off"), counters=Counters(2, 2, hour_room_at=room)
    )
    assert (held.action, held.reason, held.until, held.cap) == ("hold", "cap", room, "per_hour")


def test_both_caps_reached_wait_for_the_later_room() -> None:
    """With the hour and the day full, the hold lasts until both have room; unknown room: a window."""
    both = prefs(caps={"per_hour": 1, "per_day": 5}, digest="off")
    known = Counters(1, 5, hour_room_at=utc("2026-06-15 10:30"), day_room_at=utc("2026-06-15 18:00"))
    got = email(note(), both, counters=known)
    assert (got.reason, got.cap, got.until) == ("cap", "per_day", utc("2026-06-15 18:00"))
    assert email(note(), both, counters=Counters(1, 5)).until == NOW + timedelta(days=1)
    hour_only = prefs(caps={"per_hour": 1}, digest="off")
    assert email(note(), hour_only, counters=Counters(1, 1)).until == NOW + timedelta(hours=1)


def test_each_channel_is_decided_on_its_own() -> None:
    """All channels when none are named; a channel off suppresses only itself; named ones only."""
    no_push = prefs(channels={"push": False}, digest="off")
    everywhere = decide(note(channels=None), no_push, BERLIN, NOW)
    assert [(d.channel, d.action) for d in everywhere.channels] == [
        ("email", "deliver"),
        ("push", "suppress"),
        ("webhook", "deliver"),
    ]
    push = everywhere.for_channel("push")
    assert push is not None and push.suppressed_by == "channel"
    named = decide(note(channels=["webhook"]), no_push, BERLIN, NOW)
    assert [d.channel for d in named.channels] == ["webhook"] and named.for_channel("email") is None


def test_quiet_hours_hold_across_the_spring_change() -> None:
    """At 03:30 summer time on 2026-03-29 a normal notification waits for 07:00 CEST (05:00Z)."""
    night = prefs(quiet_hours={"start": "22:00", "end": "07:00"})
    got = email(note(), night, now=utc("2026-03-29 01:30"))
    assert (got.action, got.reason, got.until) == ("hold", "quiet_hours", utc("2026-03-29 05:00"))


def test_a_closed_digest_waits_for_dnd_quiet_hours_and_room() -> None:
    """decide_batch: a digest closing inside quiet hours, dnd or a full cap stays held as one."""
    assert decide_batch("u1", "email", prefs(), BERLIN, NOW).action == "deliver"
    quiet = decide_batch("u1", "email", prefs(**QUIET), BERLIN, NOW)
    assert (quiet.action, quiet.reason, quiet.until) == ("hold", "quiet_hours", utc("2026-06-15 11:30"))
    assert decide_batch("u1", "email", prefs(**DND), BERLIN, NOW).reason == "dnd"
    capped = decide_batch("u1", "email", prefs(**CAP3), BERLIN, NOW, FULL_HOUR)
    assert (capped.action, capped.reason, capped.until) == ("hold", "cap", utc("2026-06-15 10:20"))
    assert capped.digest_key == DigestKey("u1", "email")


def test_the_decision_is_pure_and_needs_an_aware_now() -> None:
    """Same inputs, same decision; a naive now is refused rather than read in the machine's zone."""
    assert decide(note(), prefs(), BERLIN, NOW) == decide(note(), prefs(), BERLIN, NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(note(), prefs(), BERLIN, NOW.replace(tzinfo=None))


# --- explain


def sentences(
    notification: NotificationSend, preferences: Preferences, now: datetime = NOW, **kw: Any
) -> list[str]:
    return [e.line() for e in explain(notification, preferences, BERLIN, now, **kw)]


def test_explain_says_what_would_happen_and_why() -> None:
    """One sentence per channel, in the user's zone, from the same decision."""
    assert sentences(note("high"), prefs()) == ["email: would send now"]
    night = prefs(quiet_hours={"start": "22:00", "end": "07:00"})
    assert sentences(note(), night, now=utc("2026-06-15 21:00")) == [
        "email: would hold until 07:00 Europe/Berlin for quiet hours"
    ]
    assert sentences(note(), prefs(), now=utc("2026-06-15 07:30")) == [
        "email: would join the digest closing at 09:35 Europe/Berlin"
    ]
    assert sentences(note(category="marketing"), prefs(**MARKETING_OFF)) == [
        "email: suppressed by the user's choice for category 'marketing' on email"
    ]
    assert sentences(note(channels=["push"]), prefs(channels={"push": False})) == [
        "push: suppressed by the user's choice: push is off"
    ]
    assert sentences(note("high"), prefs(**DND)) == [
        "email: would hold until 13:30 Europe/Berlin for do-not-disturb"
    ]


def test_explain_caps_full_digests_and_urgent() -> None:
    """Caps name their limit; a full digest closes now; urgent says what it passes."""
    counters = {"email": FULL_HOUR}
    assert sentences(note("high"), prefs(**CAP3), counters=counters) == [
        "email: would join the digest closing at 12:05 Europe/Berlin, as the cap of 3 per hour is reached"
    ]
    assert sentences(note("high"), prefs(**CAP3, **OFF), counters=counters) == [
        "email: would hold until 12:20 Europe/Berlin for the cap of 3 per hour,"
        " then send the held ones as one digest"
    ]
    full = {"email": OpenDigest(opened_at=NOW, size=49)}
    assert sentences(note(), prefs(), digests=full) == ["email: would join the digest closing now, full"]
    assert sentences(note("urgent"), prefs(**QUIET)) == ["email: would send now (urgent: passes quiet hours)"]
    assert sentences(note("urgent"), prefs(**DND)) == [
        "email: would send now (urgent: passes do-not-disturb)"
    ]
    far = prefs(dnd_until="2026-06-20T06:00:00Z")
    assert sentences(note(), far) == [
        "email: would hold until 2026-06-20 08:00 Europe/Berlin for do-not-disturb"
    ]
