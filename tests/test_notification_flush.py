"""Closing batches exactly once: racing flushes, retried flushes, items arriving meanwhile, and
the whole path through real Dramatiq workers to the outbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from jobs.notifications import state as state_module
from jobs.notifications.actors import services
from jobs.notifications.flush import FlushJob, flush
from tests.helpers import events, wait_for
from tests.test_notification_send import T0, Daemon, Rig, open_daemon, open_rig


@pytest.fixture
def rig(env: dict[str, str]) -> Iterator[Rig]:
    yield from open_rig(env)


def _pending_flush(rig: Rig) -> FlushJob:
    """The flush job of u1's email batch, released now (as the DueStore would)."""
    rig.svc.due.release_due(int((T0 + timedelta(days=1)).timestamp() * 1000))
    (message,) = rig.queued("notifications.flush")
    return FlushJob.model_validate(message["kwargs"]["data"])


def test_racing_flushes_send_one_message(rig: Rig) -> None:
    """Two flush jobs for one batch, run at once by two threads: one email, one event."""
    rig.user("u1")
    for n in range(3):
        rig.send(T0, f"n{n}")
    job = _pending_flush(rig)
    at = T0 + timedelta(minutes=5)
    start = threading.Barrier(2)

    def run(owner: str) -> None:
        start.wait()
        flush(rig.svc, rig.emit, job, owner=owner, now=at)

    threads = [threading.Thread(target=run, args=(f"m{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(rig.emails()) == 1
    assert len(rig.of("notification.delivered")) == 1
    flush(rig.svc, rig.emit, job, owner="m9", now=at)  # a late duplicate finds nothing
    assert len(rig.emails()) == 1


def test_flush_killed_after_claim_is_resumed_by_its_retry(rig: Rig) -> None:
    """Claimed, then the worker dies; the retry (same message id) sends the batch once."""
    rig.user("u1")
    rig.send(T0, "n1")
    rig.send(T0, "n2")
    job = _pending_flush(rig)
    at = T0 + timedelta(minutes=5)
    rig.svc.state.claim(job.batch_key, job.batch_id, "m1", now=at, lease_s=120)
    # Someone else's flush of the same batch while the claim is held: no message.
    flush(rig.svc, rig.emit, job, owner="other", now=at)
    assert rig.emails() == []
    flush(rig.svc, rig.emit, job, owner="m1", now=at)
    (email,) = rig.emails()
    assert len(email["variables"]["items"]) == 2


def test_flush_killed_after_hand_over_does_not_send_again(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flush that dies after handing over but before deleting its claim: the retry sends nothing new."""
    rig.user("u1")
    rig.send(T0, "n1")
    job = _pending_flush(rig)
    at = T0 + timedelta(minutes=5)

    def crash(self: state_module.NotifState, batch_id: str) -> None:
        raise ConnectionError("worker killed")

    with monkeypatch.context() as patch:
        patch.setattr(state_module.NotifState, "finish", crash)
        with pytest.raises(ConnectionError):
            flush(rig.svc, rig.emit, job, owner="m1", now=at)
    flush(rig.svc, rig.emit, job, owner="m1", now=at)
    assert len(rig.emails()) == 1
    assert len(rig.of("notification.delivered")) == 1
    assert not rig.runtime.redis.keys("*notif:flushing:*")


def test_items_arriving_during_a_flush_start_a_new_batch(rig: Rig) -> None:
    """An item that arrives while a batch is claimed goes into a new batch, flushed on its own."""
    rig.user("u1")
    rig.send(T0, "n1")
    rig.send(T0, "n2")
    job = _pending_flush(rig)
    at = T0 + timedelta(minutes=5)
    rig.svc.state.claim(job.batch_key, job.batch_id, "m1", now=at, lease_s=120)
    rig.send(at, "n3")
    flush(rig.svc, rig.emit, job, owner="m1", now=at)
    (first,) = rig.emails()
    assert {i["title"] for i in first["variables"]["items"]} == {"title n1", "title n2"}
    rig.queued("email.send")  # take it
    assert rig.run_due(at + timedelta(minutes=5)) == 1
    (second,) = rig.emails()
    assert second["variables"]["title"] == "title n3"


@pytest.fixture
def daemon(env: dict[str, str]) -> Iterator[Daemon]:
    yield from open_daemon(env)


def _outbox(daemon: Daemon) -> list[str]:
    daemon.due.release_due()
    outbox: Path = daemon.runtime.settings.outbox_dir
    return [p.read_text() for p in outbox.glob("*.eml")]


def _add_user(daemon: Daemon) -> None:
    Rig(daemon.runtime, services(daemon.runtime)).user("u1")


def test_window_digest_is_one_email_with_every_title(daemon: Daemon, redis_client: redis.Redis) -> None:
    """Through intake and Dramatiq: three normal notifications become ONE .eml listing all titles."""
    _add_user(daemon)
    daemon.worker.start()
    titles = ["Send the Q3 report", "Review the budget", "Call the bank"]
    for n, title in enumerate(titles):
        daemon.submit(
            redis_client,
            {
                "type": "notification.send",
                "id": f"d{n}",
                "data": {"user_id": "u1", "category": "task.due", "title": title, "channels": ["email"]},
            },
        )
    (eml,) = wait_for(lambda: _outbox(daemon), timeout_s=15, what="the digest .eml")
    assert all(title in eml for title in titles)
    delivered = [e for e in events(redis_client) if e["type"] == "notification.delivered"]
    assert len(delivered) == 1 and delivered[0]["data"]["count"] == 3


def test_urgent_goes_through_the_urgent_queue(daemon: Daemon, redis_client: redis.Redis) -> None:
    """An urgent notification is queued on the urgent queue and its email written at once."""
    _add_user(daemon)
    daemon.submit(
        redis_client,
        {
            "type": "notification.send",
            "id": "u-1",
            "data": {
                "user_id": "u1",
                "category": "security",
                "title": "New sign-in",
                "priority": "urgent",
                "channels": ["email"],
            },
        },
    )
    assert redis_client.hlen(daemon.runtime.keys.queue_messages("urgent")) == 1
    daemon.worker.start()
    (eml,) = wait_for(lambda: _outbox(daemon), timeout_s=15, what="the urgent .eml")
    assert "New sign-in" in eml


def test_a_digest_closing_in_quiet_hours_waits_them_out(rig: Rig) -> None:
    """A window digest that closes at 22:03, inside quiet hours from 22:00, goes out at 07:00."""
    from datetime import UTC, datetime

    rig.user("u1", quiet_hours={"start": "22:00", "end": "07:00"})
    opened = datetime(2026, 7, 14, 21, 58, tzinfo=UTC)
    rig.send(opened, "n1")
    rig.send(opened, "n2")
    assert rig.run_due(opened + timedelta(minutes=5)) == 1  # the close comes, and is held
    assert rig.emails() == []
    held = [e for e in rig.of("notification.deferred") if e["reason"] == "quiet_hours"]
    assert held and held[0]["until"] == "2026-07-15T07:00:00Z"
    assert rig.run_due(datetime(2026, 7, 15, 6, 59, tzinfo=UTC)) == 0
    assert rig.run_due(datetime(2026, 7, 15, 7, 0, tzinfo=UTC)) == 1
    (email,) = rig.emails()
    assert len(email["variables"]["items"]) == 2
