"""The notification job data (jobs/notifications/models.py) and merging preference updates."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from jobs.notifications.models import (
    NotificationCancel,
    NotificationSend,
    PreferencesUpdate,
    QuietHours,
    UserDelete,
    UserUpsert,
)
from jobs.notifications.preferences import Caps, Preferences, merge


def error_text(model: type[BaseModel], data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return str(caught.value)


def update(**fields: Any) -> PreferencesUpdate:
    return PreferencesUpdate.model_validate({"user_id": "u1", **fields})


# --- user.upsert and user.delete


def test_user_upsert_accepts_an_iana_zone_and_normalises_the_email() -> None:
    """A complete user: the zone is kept as given, the email's domain is normalised."""
    user = UserUpsert.model_validate(
        {
            "user_id": "u1",
            "email": "Ada@Example.COM",
            "name": "Ada",
            "timezone": "America/New_York",
            "locale": "en-US",
            "push_tokens": ["tok-a", {"token": "tok-b", "platform": "ios"}],
        }
    )
    assert user.email == "Ada@example.com"
    assert user.timezone == "America/New_York"
    assert [(t.token, t.platform) for t in user.push_tokens or []] == [("tok-a", None), ("tok-b", "ios")]


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "europe/berlin", "localtime", "../etc/passwd", ""])
def test_user_upsert_rejects_an_unknown_time_zone_with_a_clear_message(zone: str) -> None:
    """An unknown or malformed zone name is refused, naming the field and what is accepted."""
    text = error_text(UserUpsert, {"user_id": "u1", "timezone": zone})
    assert "timezone" in text and f"unknown time zone {zone!r}" in text and "IANA" in text


def test_user_upsert_defaults_and_other_checks() -> None:
    """Zone UTC and locale en by default; omitted push tokens (None) differ from an empty list."""
    user = UserUpsert.model_validate({"user_id": "u1"})
    assert (user.timezone, user.locale, user.push_tokens) == ("UTC", "en", None)
    assert UserUpsert.model_validate({"user_id": "u1", "push_tokens": []}).push_tokens == []
    assert "not a valid email address" in error_text(UserUpsert, {"user_id": "u1", "email": "nope"})
    assert "BCP 47" in error_text(UserUpsert, {"user_id": "u1", "locale": "en_US"})
    assert "single line" in error_text(UserUpsert, {"user_id": "u1", "name": "A\r\nBcc: x"})
    assert "user_id" in error_text(UserDelete, {})


# --- preferences.update


@pytest.mark.parametrize("bad", ["24:00", "7:00", "07:60", "0700", "07:00:00", "", 700])
def test_a_bad_hh_mm_is_refused_in_quiet_hours_and_digest_at(bad: object) -> None:
    """Quiet hours and digest_at take HH:MM from 00:00 to 23:59, nothing else."""
    quiet = error_text(PreferencesUpdate, {"user_id": "u1", "quiet_hours": {"start": bad, "end": "07:00"}})
    assert "quiet_hours.start" in quiet and "HH:MM" in quiet
    daily = error_text(PreferencesUpdate, {"user_id": "u1", "digest": "daily", "digest_at": bad})
    assert "digest_at" in daily and "HH:MM" in daily


def test_preferences_update_rules() -> None:
    """Quiet hours of no length, daily without a time, nulls where a value is needed, naive dnd."""
    assert "start and end are equal" in error_text(
        PreferencesUpdate, {"user_id": "u1", "quiet_hours": {"start": "22:00", "end": "22:00"}}
    )
    assert "needs digest_at" in error_text(PreferencesUpdate, {"user_id": "u1", "digest": "daily"})
    assert "digest cannot be null" in error_text(PreferencesUpdate, {"user_id": "u1", "digest": None})
    assert "timezone" in error_text(PreferencesUpdate, {"user_id": "u1", "dnd_until": "2026-06-01T10:00:00"})
    assert "digest" in error_text(PreferencesUpdate, {"user_id": "u1", "digest": "weekly"})
    assert "channels.sms" in error_text(PreferencesUpdate, {"user_id": "u1", "channels": {"sms": True}})
    assert "per_hour" in error_text(PreferencesUpdate, {"user_id": "u1", "caps": {"per_hour": 0}})


def test_dnd_until_is_kept_in_utc() -> None:
    """An offset time is normalised to UTC."""
    given = update(dnd_until="2026-06-01T12:00:00+02:00")
    assert given.dnd_until == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert given.dnd_until is not None and given.dnd_until.utcoffset() is not None


def test_default_preferences() -> None:
    """No choices: every channel on, window digest, no quiet hours, no dnd, no caps."""
    prefs = Preferences()
    assert prefs.channels == {"email": True, "push": True, "webhook": True}
    assert (prefs.digest, prefs.quiet_hours, prefs.dnd_until, prefs.caps) == ("window", None, None, Caps())


def test_a_partial_update_changes_only_what_it_gives() -> None:
    """Each field left out keeps its stored value; within dicts, each key left out too."""
    # Given preferences with a choice in every field
    stored = merge(
        Preferences(),
        update(
            channels={"push": False},
            categories={"marketing": {"email": False, "push": False}, "billing": {"webhook": True}},
            quiet_hours={"start": "22:00", "end": "07:00"},
            dnd_until="2026-06-01T10:00:00Z",
            digest="daily",
            digest_at="08:30",
            caps={"per_hour": 5, "per_day": 20},
        ),
    )
    # When an update gives one key of channels, one channel of a category and one cap
    after = merge(
        stored,
        update(channels={"email": False}, categories={"marketing": {"push": True}}, caps={"per_day": 30}),
    )
    # Then only those change
    assert after.channels == {"email": False, "push": False, "webhook": True}
    assert after.categories == {"marketing": {"email": False, "push": True}, "billing": {"webhook": True}}
    assert after.caps == Caps(per_hour=5, per_day=30)
    assert after.quiet_hours == QuietHours(start=time(22, 0), end=time(7, 0))
    assert after.dnd_until == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert (after.digest, after.digest_at) == ("daily", time(8, 30))


def test_nulls_in_an_update_clear_what_they_name() -> None:
    """null turns quiet hours and dnd off, removes a cap, a category, or one category choice."""
    stored = merge(
        Preferences(),
        update(
            categories={"marketing": {"email": False, "push": False}, "billing": {"webhook": False}},
            quiet_hours={"start": "22:00", "end": "07:00"},
            dnd_until="2026-06-01T10:00:00Z",
            caps={"per_hour": 5, "per_day": 20},
        ),
    )
    after = merge(
        stored,
        update(
            quiet_hours=None,
            dnd_until=None,
            caps={"per_hour": None},
            categories={"marketing": {"email": None}, "billing": None},
        ),
    )
    assert after.quiet_hours is None and after.dnd_until is None
    assert after.caps == Caps(per_hour=None, per_day=20)
    assert after.categories == {"marketing": {"push": False}}


def test_preferences_round_trip_through_json() -> None:
    """What is stored as JSON (HH:MM, ISO UTC) reads back as the same value."""
    prefs = merge(
        Preferences(),
        update(quiet_hours={"start": "22:15", "end": "06:45"}, digest="daily", digest_at="07:05"),
    )
    dumped = prefs.model_dump(mode="json")
    assert dumped["quiet_hours"] == {"start": "22:15", "end": "06:45"} and dumped["digest_at"] == "07:05"
    assert Preferences.model_validate(dumped) == prefs
    with pytest.raises(ValidationError, match="needs digest_at"):
        Preferences.model_validate({"digest": "daily"})
    # The preferences table keeps "none" as empty JSON objects.
    empty: dict[str, Any] = {"channels": {}, "categories": {}, "quiet_hours": {}, "caps": {}}
    assert Preferences.model_validate(empty) == Preferences()


# --- notification.send and notification.cancel


def test_notification_send_defaults_and_channel_order() -> None:
    """Priority normal by default; the channels asked for are decided in a fixed order."""
    sent = NotificationSend.model_validate(
        {"user_id": "u1", "category": "task.reminder", "title": "Pay rent", "channels": ["push", "email"]}
    )
    assert sent.priority == "normal" and sent.wanted_channels() == ("email", "push")
    everywhere = NotificationSend.model_validate({"user_id": "u1", "category": "c", "title": "t"})
    assert everywhere.wanted_channels() == ("email", "push", "webhook")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"priority": "critical"}, "priority"),
        ({"channels": ["sms"]}, "channels.0"),
        ({"channels": ["email", "email"]}, "names a channel twice"),
        ({"channels": []}, "channels"),
        ({"title": "two\nlines"}, "single line"),
        ({"title": ""}, "title"),
        ({"url": "javascript:alert(1)"}, "http or https URL"),
        ({"category": "has space"}, "category"),
        ({"dedupe_key": ""}, "dedupe_key"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_notification_send_refuses_bad_data(change: dict[str, Any], message: str) -> None:
    """Each bad field is named in the error."""
    base = {"user_id": "u1", "category": "task.reminder", "title": "Pay rent"}
    assert message in error_text(NotificationSend, {**base, **change})


def test_notification_cancel_by_id_or_by_user_and_key() -> None:
    """Exactly one way to name the notification to withdraw."""
    assert NotificationCancel.model_validate({"notification_id": "n1"}).notification_id == "n1"
    assert NotificationCancel.model_validate({"user_id": "u1", "dedupe_key": "k"}).dedupe_key == "k"
    for bad in ({}, {"user_id": "u1"}, {"dedupe_key": "k"}, {"notification_id": "n1", "dedupe_key": "k"}):
        assert "give either notification_id, or user_id and dedupe_key" in error_text(NotificationCancel, bad)


def test_every_model_has_a_json_schema_for_the_host() -> None:
    """`taskmaster-worker schema` can print each; HH:MM is a string pattern there."""
    for model in (UserUpsert, UserDelete, PreferencesUpdate, NotificationSend, NotificationCancel):
        assert model.model_json_schema()["type"] == "object"
    quiet = PreferencesUpdate.model_json_schema()["$defs"]["QuietHours"]["properties"]["start"]
    assert quiet["type"] == "string" and "pattern" in quiet
