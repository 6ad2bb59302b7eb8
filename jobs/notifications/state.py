"""The Redis state of the sending side: open batches (digests and holds) and cap counters.

Every change that must not interleave with another is one Lua script (state.lua): adding to a
batch, claiming it for a flush, withdrawing an item, and counting a delivery against the caps.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from importlib import resources
from typing import Any

import redis

from jobs.notifications.decision import Counters, OpenDigest
from jobs.notifications.digest import DigestItem
from jobs.notifications.keys import NotifKeys
from jobs.notifications.models import Channel
from jobs.notifications.preferences import Caps
from worker.events import Events


def _scripts() -> dict[str, str]:
    text = resources.files("jobs.notifications").joinpath("state.lua").read_text()
    sections: dict[str, str] = {}
    for chunk in text.split("\n--- ")[1:]:
        name, _, body = chunk.partition("\n")
        sections[name.strip()] = body
    return sections


_SCRIPTS = _scripts()


def to_ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def item_field(item: DigestItem) -> str:
    """A later item with the same dedupe_key takes the place of the earlier one."""
    return f"dk:{item.dedupe_key}" if item.dedupe_key is not None else f"id:{item.notification_id}"


def encode_item(item: DigestItem) -> str:
    return json.dumps(
        {
            "notification_id": item.notification_id,
            "category": item.category,
            "title": item.title,
            "created_ms": to_ms(item.created_at),
            "body": item.body,
            "url": item.url,
            "dedupe_key": item.dedupe_key,
            "priority": item.priority,
        },
        separators=(",", ":"),
    )


def decode_item(text: str | bytes) -> DigestItem:
    raw: dict[str, Any] = json.loads(text)
    return DigestItem(
        notification_id=raw["notification_id"],
        category=raw["category"],
        title=raw["title"],
        created_at=from_ms(raw["created_ms"]),
        body=raw.get("body") or "",
        url=raw.get("url"),
        dedupe_key=raw.get("dedupe_key"),
        priority=raw.get("priority", "normal"),
    )


@dataclass(frozen=True, slots=True)
class Added:
    batch_id: str
    close_at: datetime
    moved: bool  # the close is new or earlier: (re)put its DueStore item
    size: int


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch as read from Redis (open, or claimed by a flush)."""

    batch_id: str
    user_id: str
    channel: Channel
    opened_at: datetime
    close_at: datetime
    items: tuple[DigestItem, ...]
    received: int
    direct: bool
    sent: bool


class Claim(IntEnum):
    GONE = 0  # delivered already, or withdrawn
    CLAIMED = 1
    RESUMED = 2  # this owner's earlier attempt, or a lapsed lease: carry on where it stopped
    BUSY = 3  # another flush holds it


@dataclass(frozen=True, slots=True)
class CapCheck:
    admitted: bool
    counters: Counters


class NotifState:
    def __init__(self, client: redis.Redis, keys: NotifKeys) -> None:
        self._client = client
        self.keys = keys
        self._scripts = {name: client.register_script(body) for name, body in _SCRIPTS.items()}

    def open_digest(self, key: str) -> OpenDigest | None:
        opened, size = self._client.hmget(key, ["m:opened", "m:n"])
        if opened is None:
            return None
        return OpenDigest(opened_at=from_ms(int(opened)), size=int(size or 0))

    def snapshot(
        self, user_id: str, channels: Sequence[Channel], idempotency_key: str
    ) -> tuple[str, set[Channel], dict[Channel, OpenDigest]]:
        """In one script: the user's profile token ('' when none), the channels this job already
        handled, and the open digests."""
        keys = [self.keys.profile(user_id)]
        for channel in channels:
            keys += (self.keys.done(idempotency_key, channel), self.keys.batch(user_id, channel))
        replies = self._scripts["snapshot"](keys=keys, args=[])
        token = replies[0].decode() if isinstance(replies[0], bytes) else str(replies[0])
        done: set[Channel] = set()
        digests: dict[Channel, OpenDigest] = {}
        for index, channel in enumerate(channels):
            marked, opened, size = replies[1 + 3 * index : 4 + 3 * index]
            if marked:
                done.add(channel)
            if int(opened) >= 0:
                digests[channel] = OpenDigest(opened_at=from_ms(int(opened)), size=int(size))
        return token, done, digests

    def report(
        self,
        events: Events,
        payloads: Sequence[str],
        idempotency_key: str,
        channels: Sequence[Channel],
        ttl_s: int,
    ) -> None:
        """Publish a job's events (encoded) and mark its channels done, in one atomic step."""
        keys = [events.stream, *(self.keys.done(idempotency_key, channel) for channel in channels)]
        self._scripts["report"](keys=keys, args=[events.maxlen, ttl_s, *payloads])

    def add(
        self,
        key: str,
        item: DigestItem,
        *,
        user_id: str,
        channel: Channel,
        now: datetime,
        close_at: datetime,
        max_items: int,
        where_ttl_s: float,
        direct: bool = False,
    ) -> Added:
        """Put ``item`` into the batch at ``key`` (opening it at ``now`` when there is none)."""
        result = self._scripts["add"](
            keys=[key, self.keys.where(item.notification_id)],
            args=[
                item_field(item),
                encode_item(item),
                uuid.uuid4().hex,
                to_ms(now),
                to_ms(close_at),
                max_items,
                user_id,
                channel,
                int(where_ttl_s * 1000),
                "1" if direct else "0",
            ],
        )
        batch_id, close_ms, moved, size = result
        return Added(_text(batch_id), from_ms(int(close_ms)), bool(moved), int(size))

    def read(self, key: str) -> Batch | None:
        raw = self._client.hgetall(key)
        if not raw:
            return None
        fields = {_text(k): v for k, v in raw.items()}
        # Hash order is arbitrary: arrival order, as far as the creation times tell it.
        items = tuple(
            sorted(
                (decode_item(v) for k, v in fields.items() if not k.startswith("m:")),
                key=lambda item: (item.created_at, item.notification_id),
            )
        )
        return Batch(
            batch_id=_text(fields["m:id"]),
            user_id=_text(fields["m:user"]),
            channel=_text(fields["m:channel"]),  # type: ignore[arg-type]
            opened_at=from_ms(int(fields["m:opened"])),
            close_at=from_ms(int(fields["m:close"])),
            items=items,
            received=int(fields.get("m:received", 0)),
            direct=_text(fields.get("m:direct", b"0")) == "1",
            sent=_text(fields.get("m:sent", b"0")) == "1",
        )

    def read_close(self, key: str) -> tuple[str, datetime] | None:
        """(batch id, close time) of the open batch at ``key``."""
        batch_id, close_ms = self._client.hmget(key, ["m:id", "m:close"])
        if batch_id is None or close_ms is None:
            return None
        return _text(batch_id), from_ms(int(close_ms))

    def batch_id(self, key: str) -> str | None:
        value = self._client.hget(key, "m:id")
        return None if value is None else _text(value)

    def set_close(self, key: str, batch_id: str, close_at: datetime) -> None:
        """Record a moved close (a batch held again), if the batch is still that one."""
        if self.batch_id(key) == batch_id:
            self._client.hset(key, "m:close", to_ms(close_at))

    def claim(self, key: str, batch_id: str, owner: str, *, now: datetime, lease_s: float) -> Claim:
        result = self._scripts["claim"](
            keys=[key, self.keys.flushing(batch_id)],
            args=[batch_id, owner, int(lease_s * 1000), to_ms(now)],
        )
        return Claim(int(result))

    def mark_sent(self, batch_id: str) -> None:
        self._client.hset(self.keys.flushing(batch_id), "m:sent", "1")

    def finish(self, batch_id: str) -> None:
        self._client.delete(self.keys.flushing(batch_id))

    def withdraw(self, key: str, field: str, notification_id: str | None) -> int:
        """Remove one held item: 0 none, 1 removed, 2 removed the batch's last item."""
        return int(self._scripts["cancel"](keys=[key], args=[field, notification_id or ""]))

    def where(self, notification_id: str) -> dict[str, tuple[str, str]]:
        """channel -> (batch key, field) recorded when the notification was held."""
        out: dict[str, tuple[str, str]] = {}
        for channel, value in self._client.hgetall(self.keys.where(notification_id)).items():
            key, _, field = _text(value).partition("\n")
            out[_text(channel)] = (key, field)
        return out

    def caps(
        self, user_id: str, channel: Channel, caps: Caps, now: datetime, *, mode: str, member: str = ""
    ) -> CapCheck:
        """Count a delivery against the caps (``take``: only under both), or just look (``peek``)."""
        result: Sequence[Any] = self._scripts["caps"](
            keys=[self.keys.caps(user_id, channel)],
            args=[to_ms(now), caps.per_hour or 0, caps.per_day or 0, member or uuid.uuid4().hex, mode],
        )
        admitted, hour, day, hour_room, day_room = (int(v) for v in result)
        return CapCheck(
            admitted=bool(admitted),
            counters=Counters(
                last_hour=hour,
                last_day=day,
                hour_room_at=None if hour_room < 0 else from_ms(hour_room),
                day_room_at=None if day_room < 0 else from_ms(day_room),
            ),
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
