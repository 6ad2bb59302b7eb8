"""notification.cancel withdraws a held notification, by envelope id or by user and dedupe_key."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from jobs.notifications.actors import cancel
from jobs.notifications.models import NotificationCancel
from tests.test_notification_send import T0, Rig, open_rig


@pytest.fixture
def rig(env: dict[str, str]) -> Iterator[Rig]:
    yield from open_rig(env)


def test_cancel_by_id_withdraws_it_from_the_digest(rig: Rig) -> None:
    """Of two digested notifications, the cancelled one is not in the message that goes out."""
    rig.user("u1")
    rig.send(T0, "n1")
    rig.send(T0, "n2")
    cancel(rig.svc, rig.emit, NotificationCancel(notification_id="n1"))
    (cancelled,) = rig.of("notification.cancelled")
    assert cancelled["channel"] == "email" and cancelled["found"] is True
    assert cancelled["notification_ids"] == ["n1"]
    rig.run_due(T0 + timedelta(minutes=5))
    (email,) = rig.emails()
    assert email["template"] == "system" and email["variables"]["title"] == "title n2"


def test_cancel_by_dedupe_key_of_the_only_item_sends_nothing(rig: Rig) -> None:
    """Cancelling the batch's only item leaves nothing to send when the digest closes."""
    rig.user("u1", quiet_hours={"start": "08:00", "end": "12:00"})
    rig.send(T0, "n1", dedupe_key="task-7", priority="high")
    cancel(rig.svc, rig.emit, NotificationCancel(user_id="u1", dedupe_key="task-7"))
    assert rig.of("notification.cancelled")[0]["found"] is True
    rig.run_due(T0 + timedelta(hours=3))
    assert rig.emails() == []
    assert rig.of("notification.delivered") == []


def test_cancel_after_it_was_sent_reports_not_found(rig: Rig) -> None:
    """A notification already delivered cannot be withdrawn: the event says found false."""
    rig.user("u1")
    rig.send(T0, "n1", priority="urgent")
    cancel(rig.svc, rig.emit, NotificationCancel(notification_id="n1"))
    (cancelled,) = rig.of("notification.cancelled")
    assert cancelled["found"] is False
    assert len(rig.emails()) == 1
