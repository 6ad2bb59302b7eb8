"""Digest composition (jobs/notifications/digest.py): one item as itself, several as a digest."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from jobs.notifications.digest import DigestItem, DigestView, Single, compose, dedupe, render_text

BERLIN = ZoneInfo("Europe/Berlin")


def item(
    n: int, minute: int, category: str = "task.reminder", key: str | None = None, hour: int = 7
) -> DigestItem:
    """Notification n, created at hour:minute UTC on 2026-06-15 (09:mm in Berlin by default)."""
    return DigestItem(
        notification_id=f"n{n}",
        category=category,
        title=f"Title {n}",
        created_at=datetime(2026, 6, 15, hour, minute, tzinfo=UTC),
        url=f"https://app.example.com/t/{n}",
        dedupe_key=key,
    )


def digest(items: list[DigestItem]) -> DigestView:
    view = compose(items, BERLIN)
    assert isinstance(view, DigestView)
    return view


def test_one_item_goes_out_as_itself() -> None:
    """A digest of one is that notification, not a digest of one."""
    only = item(1, 30)
    assert compose([only], BERLIN) == Single(only)


def test_several_items_are_grouped_by_category_newest_first_with_counts() -> None:
    """Groups ordered by their newest item; items newest first; counts per group and in total."""
    # Given comments and reminders interleaved in time
    items = [
        item(1, 1, "comment"),
        item(2, 2, "task.reminder"),
        item(3, 3, "comment"),
        item(4, 4, "task.reminder"),
        item(5, 5, "comment"),
    ]
    # When composed
    view = digest(items)
    # Then every title is listed once, grouped, newest first
    assert [(g.category, g.count) for g in view.groups] == [("comment", 3), ("task.reminder", 2)]
    assert [[i.title for i in g.items] for g in view.groups] == [
        ["Title 5", "Title 3", "Title 1"],
        ["Title 4", "Title 2"],
    ]
    assert (view.total, view.received, view.zone) == (5, 5, "Europe/Berlin")
    assert view.subject == "5 new notifications: comment (3), task.reminder (2)"


def test_times_are_shown_in_the_users_zone() -> None:
    """07:05Z is 09:05 in Berlin in June; the date shows when the items span local days."""
    view = digest([item(1, 5), item(2, 10)])
    assert [i.time_label for i in view.groups[0].items] == ["09:10", "09:05"]
    assert view.groups[0].items[0].at.utcoffset() is not None
    # 21:30Z is 23:30 on the 15th, 22:30Z already 00:30 on the 16th in Berlin.
    spanning = digest([item(1, 30, hour=21), item(2, 30, hour=22)])
    assert [i.time_label for i in spanning.groups[0].items] == ["2026-06-16 00:30", "2026-06-15 23:30"]


def test_a_later_notification_with_the_same_dedupe_key_replaces_the_earlier() -> None:
    """A reminder sent three times is listed once, as its latest version, counted once."""
    # Given three sends of one reminder among others, not in arrival order
    items = [item(1, 10, key="rent"), item(2, 20), item(4, 40, key="rent"), item(3, 30, key="rent")]
    # When composed
    view = digest(items)
    # Then the latest (n4) stands for the three, the other item stays
    listed = view.groups[0].items
    assert [(i.notification_id, i.sends) for i in listed] == [("n4", 3), ("n2", 1)]
    assert (view.total, view.received) == (2, 4)
    assert "2 new notifications" in view.subject


def test_dedupe_down_to_one_item_sends_that_item_itself() -> None:
    """Three sends of one key and nothing else: the latest, as itself."""
    items = [item(1, 10, key="k"), item(2, 20, key="k"), item(3, 15, key="k")]
    assert compose(items, BERLIN) == Single(items[1])
    assert [(kept.notification_id, sends) for kept, sends in dedupe(items)] == [("n2", 3)]


def test_equal_times_keep_arrival_order_for_replacement() -> None:
    """With the same created_at, the one that arrived later wins."""
    first, second = item(1, 10, key="k"), item(2, 10, key="k")
    assert compose([first, second], BERLIN) == Single(second)


def test_many_categories_are_summarised_in_the_subject() -> None:
    """The subject names three categories and says how many more."""
    view = digest([item(n, n, f"cat{n}") for n in range(5)])
    assert view.subject == "5 new notifications: cat4 (1), cat3 (1), cat2 (1) and 2 more"


def test_plain_text_rendering_lists_every_title_with_its_time_and_link() -> None:
    """The text body: subject, zone, each group with its count, each item's time, title and URL."""
    text = render_text(digest([item(1, 1, "comment"), item(2, 2, key="r"), item(3, 3, key="r")]))
    assert text.splitlines()[:2] == [
        "2 new notifications: task.reminder (1), comment (1)",
        "Times are in Europe/Berlin.",
    ]
    assert "task.reminder (1)\n  09:03  Title 3 (sent 2 times)\n      https://app.example.com/t/3\n" in text
    assert "comment (1)\n  09:01  Title 1\n" in text


def test_an_empty_digest_is_an_error() -> None:
    """Nothing to send is a caller's mistake, said plainly."""
    with pytest.raises(ValueError, match="at least one item"):
        compose([], BERLIN)
