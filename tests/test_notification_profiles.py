"""The profile cache of the notification path: no SQL while the user's token stands, the new
profile at once after every write the daemon makes to it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from jobs.notifications.models import PreferencesUpdate, UserDelete, UserUpsert
from jobs.notifications.users import delete_user, update_preferences, upsert_user
from tests.test_notification_send import T0, Rig, open_rig
from worker.context import JobContext
from worker.events import JobRef


@pytest.fixture
def rig(env: dict[str, str]) -> Iterator[Rig]:
    yield from open_rig(env)


def run(rig: Rig, handler: Any, job_type: str, data: Any) -> None:
    handler(JobContext(rig.runtime, JobRef(job_type, None, None), int(time.time() * 1000), 0, "test"), data)


def profile_queries(rig: Rig) -> list[str]:
    """Each statement reading the users table from now on."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM users" in statement:
            seen.append(statement)

    event.listen(rig.runtime.db, "before_cursor_execute", note)
    return seen


def test_a_profile_is_read_once_while_its_token_stands(rig: Rig) -> None:
    run(rig, upsert_user, "user.upsert", UserUpsert(user_id="u1", email="ada@example.com", timezone="UTC"))
    queries = profile_queries(rig)
    for n in range(5):
        rig.send(T0, f"n{n}")
    assert len(queries) == 1


def test_a_preferences_update_reaches_the_next_notification(rig: Rig) -> None:
    run(rig, upsert_user, "user.upsert", UserUpsert(user_id="u1", email="ada@example.com", timezone="UTC"))
    rig.send(T0, "n1", priority="high")  # cached now
    run(
        rig,
        update_preferences,
        "preferences.update",
        PreferencesUpdate.model_validate({"user_id": "u1", "channels": {"email": False}}),
    )
    rig.send(T0, "n2", priority="high")
    email = {
        tuple(e["notification_ids"]): (kind, e["reason"]) for kind, e in rig.events if e["channel"] == "email"
    }
    assert email[("n1",)] == ("notification.delivered", "high")
    assert email[("n2",)] == ("notification.suppressed", "preference")


def test_a_device_that_moves_leaves_its_former_owner_at_once(rig: Rig) -> None:
    device = {"token": "device-1", "platform": "android"}
    for user_id in ("u1", "u2"):
        run(
            rig,
            upsert_user,
            "user.upsert",
            UserUpsert.model_validate({"user_id": user_id, "timezone": "UTC"}),
        )
    run(
        rig, upsert_user, "user.upsert", UserUpsert.model_validate({"user_id": "u1", "push_tokens": [device]})
    )
    rig.send(T0, "n1", user_id="u1", priority="high", channels=["push"])  # u1 cached with the device
    run(
        rig, upsert_user, "user.upsert", UserUpsert.model_validate({"user_id": "u2", "push_tokens": [device]})
    )
    rig.send(T0, "n2", user_id="u1", priority="high", channels=["push"])
    push = {
        tuple(e["notification_ids"]): (kind, e["reason"]) for kind, e in rig.events if e["channel"] == "push"
    }
    assert push[("n1",)] == ("notification.delivered", "high")
    assert push[("n2",)] == ("notification.suppressed", "no_address")


def test_an_erased_user_leaves_no_token_behind(rig: Rig) -> None:
    run(rig, upsert_user, "user.upsert", UserUpsert(user_id="u1", email="ada@example.com", timezone="UTC"))
    rig.send(T0, "n1")
    run(rig, delete_user, "user.delete", UserDelete(user_id="u1"))
    rig.send(T0, "n2")  # late: the user is erased
    assert not list(rig.runtime.redis.scan_iter(match="*notif:profile:*"))


def test_an_erasure_during_a_first_read_leaves_no_token_and_no_stale_profile(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user is erased while a notification reads their profile for the first time: the read
    may still see them (the two were concurrent), but no token names them afterwards and the
    next notification sees the erasure."""
    import jobs.notifications.profiles as profiles

    run(rig, upsert_user, "user.upsert", UserUpsert(user_id="u1", email="ada@example.com", timezone="UTC"))
    rig.runtime.redis.delete(rig.svc.state.keys.profile("u1"))  # as after the token's hour
    real_load = profiles.load_profiles

    def load_then_erase(engine: Any, user_ids: Any) -> Any:
        loaded = real_load(engine, user_ids)
        monkeypatch.setattr(profiles, "load_profiles", real_load)
        run(rig, delete_user, "user.delete", UserDelete(user_id="u1"))
        return loaded

    monkeypatch.setattr(profiles, "load_profiles", load_then_erase)
    rig.send(T0, "n1")
    assert not list(rig.runtime.redis.scan_iter(match="*notif:profile:*"))
    rig.send(T0, "n2")
    failed = [e for kind, e in rig.events if kind == "notification.failed"]
    assert {e["reason"] for e in failed} == {"user_erased"}
    assert {tuple(e["notification_ids"]) for e in failed} == {("n2",)}


def test_a_batch_reads_the_profiles_it_lacks_in_one_query(rig: Rig) -> None:
    """Six users, none cached (three with a token from their upsert, three whose token lapsed):
    one query for all their profiles; the next batch reads none."""
    from jobs.notifications.models import NotificationSend
    from jobs.notifications.send import Incoming, send_many

    for n in range(6):
        run(
            rig,
            upsert_user,
            "user.upsert",
            UserUpsert(user_id=f"u{n}", email=f"u{n}@example.com", timezone="UTC"),
        )
    rig.runtime.redis.delete(*(rig.svc.state.keys.profile(f"u{n}") for n in range(3)))

    def batch(tag: str) -> list[Incoming]:
        return [
            Incoming(
                NotificationSend.model_validate({"user_id": f"u{n}", "category": "c", "title": "t"}),
                f"{tag}{n}",
                f"id:{tag}{n}",
                int(T0.timestamp() * 1000),
                rig.emit,
            )
            for n in range(6)
        ]

    queries = profile_queries(rig)
    assert send_many(rig.svc, batch("a"), now=T0) == []
    assert len(queries) == 1
    assert send_many(rig.svc, batch("b"), now=T0) == []
    assert len(queries) == 1
    deferred = {e["notification_ids"][0] for kind, e in rig.events if kind == "notification.deferred"}
    assert deferred == {f"{tag}{n}" for tag in "ab" for n in range(6)}
