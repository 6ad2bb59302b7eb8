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
class Ask:
    """What a notification's snapshot reads: its user, the channels it asks for, its job's key."""

    user_id: str
    channels: Sequence[Channel]
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    token: str  # the user's profile token, '' when none
    done: set[Channel]  # channels this job already handled
    digests: dict[Channel, OpenDigest]  # the user's open digests on the channels asked


@dataclass(frozen=True, slots=True)
class AddRequest:
    """``item`` into the batch at ``key``, which opens at ``now`` when there is none."""

    key: str
    item: DigestItem
    user_id: str
    channel: Channel
    now: datetime
    close_at: datetime
    max_items: int
    where_ttl_s: float
    direct: bool = False


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

    def snapshot(self, asks: Sequence[Ask]) -> list[Snapshot]:
        """In one script, for each notification: the user's profile token ('' when none), the
        channels its job already handled, and the user's open digests on its channels."""
        spec = [[ask.user_id, ask.idempotency_key, list(ask.channels)] for ask in asks]
        replies = self._scripts["snapshot"](args=[self.keys.root, _json(spec)])
        out: list[Snapshot] = []
        at = 0
        for ask in asks:
            token = _text(replies[at])
            done: set[Channel] = set()
            digests: dict[Channel, OpenDigest] = {}
            for index, channel in enumerate(ask.channels):
                marked, opened, size = replies[at + 1 + 3 * index : at + 4 + 3 * index]
                if marked:
                    done.add(channel)
                if int(opened) >= 0:
                    digests[channel] = OpenDigest(opened_at=from_ms(int(opened)), size=int(size))
            out.append(Snapshot(token, done, digests))
            at += 1 + 3 * len(ask.channels)
        return out

    def report(
        self,
        events: Events,
        payloads: Sequence[str],
        done: Sequence[tuple[str, Channel]],
        ttl_s: int,
    ) -> None:
        """Publish jobs' events (encoded) and mark each (idempotency key, channel) of ``done``,
        in one atomic step."""
        self._scripts["report"](
            keys=[events.stream],
            args=[events.maxlen, ttl_s, self.keys.root, _json(done), "\n".join(payloads)],
        )

    def add(self, request: AddRequest) -> Added:
        """Put an item into the batch at ``request.key`` (opening it when there is none)."""
        return self.add_many([request])[0]

    def add_many(self, requests: Sequence[AddRequest]) -> list[Added]:
        """Put each item into its batch, in order, in one script: the same as one add after the
        other."""
        if not requests:
            return []
        spec = [
            (
                r.key,
                item_field(r.item),
                uuid.uuid4().hex,
                str(to_ms(r.now)),
                str(to_ms(r.close_at)),
                str(r.max_items),
                r.user_id,
                r.channel,
                str(int(r.where_ttl_s * 1000)),
                "1" if r.direct else "0",
                r.item.notification_id,
            )
            for r in requests
        ]
        result = self._scripts["add"](
            args=[self.keys.root, _json(spec), *(encode_item(r.item) for r in requests)]
        )
        return [
            Added(_text(result[i]), from_ms(int(result[i + 1])), bool(result[i + 2]), int(result[i + 3]))
            for i in range(0, len(result), 4)
        ]

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

    def read_closes(self, keys: Sequence[str]) -> list[tuple[str, datetime] | None]:
        """(batch id, close time) of the open batch at each key (None: none), in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, ["m:id", "m:close"])
        out: list[tuple[str, datetime] | None] = []
        for batch_id, close_ms in pipe.execute():
            out.append(
                None if batch_id is None or close_ms is None else (_text(batch_id), from_ms(int(close_ms)))
            )
        return out

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


def _json(value: Any) -> str:
    """Arguments for the batch scripts' cjson: UTF-8 as it is, compact."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
