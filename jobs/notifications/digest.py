"""What a closed digest sends: one item as itself, several as one digest message.

A digest lists every title, grouped by category, newest first, with counts and times in the
user's zone. Within a digest a later notification with the same ``dedupe_key`` replaces the
earlier one, so a reminder sent three times is listed once. `compose` builds a structure a
template renders; `render_text` is its plain-text rendering.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from jobs.notifications.models import Priority


@dataclass(frozen=True, slots=True)
class DigestItem:
    """A notification as held in a digest."""

    notification_id: str
    category: str
    title: str
    created_at: datetime  # aware
    body: str = ""
    url: str | None = None
    dedupe_key: str | None = None
    priority: Priority = "normal"


@dataclass(frozen=True, slots=True)
class ItemView:
    notification_id: str
    title: str
    url: str | None
    at: datetime  # in the user's zone
    time_label: str  # "09:41", or "2026-03-29 09:41" when the digest spans several local days
    sends: int  # how many notifications with its dedupe_key it stands for (1 without one)


@dataclass(frozen=True, slots=True)
class Group:
    category: str
    count: int
    items: tuple[ItemView, ...]


@dataclass(frozen=True, slots=True)
class DigestView:
    subject: str
    groups: tuple[Group, ...]
    total: int  # items listed, after dedupe_key replacement
    received: int  # notifications it collects, before replacement
    zone: str


@dataclass(frozen=True, slots=True)
class Single:
    """A digest of one item goes out as that notification itself."""

    item: DigestItem


def dedupe(items: Iterable[DigestItem]) -> list[tuple[DigestItem, int]]:
    """Each item that survives replacement by a later one with its ``dedupe_key``, with the
    number of notifications it stands for. Later means created later; ties keep arrival order."""
    ordered = sorted(enumerate(items), key=lambda pair: (pair[1].created_at, pair[0]))
    latest: dict[object, DigestItem] = {}
    sends: dict[object, int] = {}
    for index, item in ordered:
        key: object = ("key", item.dedupe_key) if item.dedupe_key is not None else ("item", index)
        latest.pop(key, None)  # re-insert so that dict order follows the latest arrival
        latest[key] = item
        sends[key] = sends.get(key, 0) + 1
    return [(item, sends[key]) for key, item in latest.items()]


def compose(items: Iterable[DigestItem], tz: ZoneInfo) -> Single | DigestView:
    """The message for a closed digest. Raises ValueError for an empty one."""
    given = list(items)
    kept = dedupe(given)
    if not kept:
        raise ValueError("a digest needs at least one item")
    if len(kept) == 1:
        return Single(kept[0][0])
    newest_first = sorted(kept, key=lambda pair: pair[0].created_at, reverse=True)
    days = {item.created_at.astimezone(tz).date() for item, _ in kept}
    fmt = "%H:%M" if len(days) == 1 else "%Y-%m-%d %H:%M"
    grouped: dict[str, list[ItemView]] = {}
    for item, sends in newest_first:  # dict order: the category with the newest item first
        local = item.created_at.astimezone(tz)
        view = ItemView(item.notification_id, item.title, item.url, local, local.strftime(fmt), sends)
        grouped.setdefault(item.category, []).append(view)
    groups = tuple(Group(category, len(views), tuple(views)) for category, views in grouped.items())
    return DigestView(
        subject=_subject(groups, len(kept)),
        groups=groups,
        total=len(kept),
        received=len(given),
        zone=tz.key,
    )


def _subject(groups: tuple[Group, ...], total: int) -> str:
    shown = ", ".join(f"{group.category} ({group.count})" for group in groups[:3])
    more = f" and {len(groups) - 3} more" if len(groups) > 3 else ""
    return f"{total} new notifications: {shown}{more}"


def render_text(view: DigestView) -> str:
    """The plain-text body of a digest."""
    lines = [view.subject, f"Times are in {view.zone}.", ""]
    for group in view.groups:
        lines.append(f"{group.category} ({group.count})")
        for item in group.items:
            repeated = f" (sent {item.sends} times)" if item.sends > 1 else ""
            lines.append(f"  {item.time_label}  {item.title}{repeated}")
            if item.url:
                lines.append(f"      {item.url}")
        lines.append("")
    return "\n".join(lines)
