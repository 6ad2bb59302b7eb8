"""Users, push tokens and preferences: the jobs through real Dramatiq workers, and load_profile."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from sqlalchemy import Engine

from jobs.notifications.preferences import Preferences
from jobs.notifications.profiles import load_profile
from tests.helpers import events, wait_for
from tests.test_worker_inprocess import Harness
from worker.db import migrate
from worker.db.session import make_engine
from worker.settings import load_settings

JOB_MODULES = "jobs.notifications.users,jobs.notifications.retention"


@pytest.fixture
def notif_env(env: dict[str, str], db_url: str) -> dict[str, str]:
    """A daemon environment on a migrated database (SQLite, and PostgreSQL when configured)."""
    migrate.upgrade(db_url)
    return {
        **env,
        "TASKMASTER_DATABASE_URL": db_url,
        "TASKMASTER_JOB_MODULES": JOB_MODULES,
        "TASKMASTER_JOB_MIN_BACKOFF": "0.05",
        "TASKMASTER_JOB_MAX_BACKOFF": "0.2",
    }


@pytest.fixture
def harness(notif_env: dict[str, str]) -> Iterator[Harness]:
    h = Harness(load_settings(notif_env))
    h.worker.start()
    yield h
    h.close()


@pytest.fixture
def engine(notif_env: dict[str, str]) -> Iterator[Engine]:
    e = make_engine(notif_env["TASKMASTER_DATABASE_URL"])
    yield e
    e.dispose()


def run_job(
    h: Harness, client: redis.Redis, job_type: str, data: dict[str, Any], done: str
) -> dict[str, Any]:
    """Submit a job and wait for the event ``done`` it reports; return that event."""
    entry = h.submit(client, {"type": job_type, "data": data})
    found = wait_for(
        lambda: [e for e in events(client) if e["type"] == done and e["data"].get("entry") == entry],
        timeout_s=15,
        what=f"{done} for {job_type}",
    )
    return found[0]


def test_an_unknown_user_has_no_profile(engine: Engine) -> None:
    """load_profile of a user no job has named is None."""
    assert load_profile(engine, "nobody") is None


def test_upsert_stores_the_user_with_default_preferences(
    harness: Harness, redis_client: redis.Redis, engine: Engine
) -> None:
    """user.upsert stores the user; with no preferences row the profile has the defaults."""
    # Given a user with two push tokens, one without a platform
    data = {
        "user_id": "u-1",
        "email": "Ada@Example.com",
        "name": "Ada",
        "timezone": "Europe/Berlin",
        "locale": "de-AT",
        "push_tokens": ["tok-a", {"token": "tok-b", "platform": "ios"}],
    }
    # When it is upserted
    event = run_job(harness, redis_client, "user.upsert", data, "user.upserted")
    # Then the profile reads back, and the event names the user by id only
    profile = load_profile(engine, "u-1")
    assert profile is not None
    assert (profile.email, profile.name, profile.locale) == ("Ada@example.com", "Ada", "de-AT")
    assert profile.timezone == ZoneInfo("Europe/Berlin")
    assert profile.preferences == Preferences() and profile.preferences.digest == "window"
    assert profile.push_tokens == ("tok-a", "tok-b") and not profile.erased
    assert "example.com" not in str(event).lower() and event["data"]["user_id"] == "u-1"


def test_a_token_list_replaces_the_tokens_and_moves_a_device(
    harness: Harness, redis_client: redis.Redis, engine: Engine
) -> None:
    """A new push token list replaces the old; a token another user held moves to the new user."""
    run_job(
        harness, redis_client, "user.upsert", {"user_id": "u-1", "push_tokens": ["a", "b"]}, "user.upserted"
    )
    run_job(harness, redis_client, "user.upsert", {"user_id": "u-2", "push_tokens": ["c"]}, "user.upserted")
    # When u-1 now lists b and c, and u-2 is upserted again without a token list
    run_job(
        harness, redis_client, "user.upsert", {"user_id": "u-1", "push_tokens": ["b", "c"]}, "user.upserted"
    )
    run_job(harness, redis_client, "user.upsert", {"user_id": "u-2", "name": "Bo"}, "user.upserted")
    # Then u-1 has b and c, and u-2 lost c (the device moved) and kept nothing else
    one, two = load_profile(engine, "u-1"), load_profile(engine, "u-2")
    assert one is not None and two is not None
    assert sorted(one.push_tokens) == ["b", "c"] and two.push_tokens == () and two.name == "Bo"


def test_preferences_wait_for_the_user_then_merge(
    harness: Harness, redis_client: redis.Redis, engine: Engine
) -> None:
    """preferences.update for a user not known yet is retried until the upsert lands; updates merge."""
    # Given preferences submitted before their user
    update = {"user_id": "u-3", "quiet_hours": {"start": "22:00", "end": "07:00"}, "caps": {"per_hour": 4}}
    entry = harness.submit(redis_client, {"type": "preferences.update", "data": update})
    run_job(
        harness,
        redis_client,
        "user.upsert",
        {"user_id": "u-3", "timezone": "America/New_York"},
        "user.upserted",
    )
    wait_for(
        lambda: [
            e
            for e in events(redis_client)
            if e["type"] == "preferences.updated" and e["data"]["entry"] == entry
        ],
        timeout_s=15,
        what="the retried preferences.update",
    )
    # When a second, partial update turns push off for one category
    second = {
        "user_id": "u-3",
        "categories": {"task.reminder": {"push": False}},
        "digest": "daily",
        "digest_at": "08:30",
    }
    run_job(harness, redis_client, "preferences.update", second, "preferences.updated")
    # Then both updates hold
    profile = load_profile(engine, "u-3")
    assert profile is not None
    prefs = profile.preferences
    assert prefs.quiet_hours is not None and (prefs.quiet_hours.start, prefs.quiet_hours.end) == (
        time(22),
        time(7),
    )
    assert prefs.caps.per_hour == 4 and prefs.caps.per_day is None
    assert prefs.category_choice("task.reminder", "push") is False and prefs.channel_on("push")
    assert (prefs.digest, prefs.digest_at) == ("daily", time(8, 30))
    assert not [e for e in events(redis_client) if e["type"] == "job.dead"]
