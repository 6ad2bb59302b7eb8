"""Erasing a user: personal data out of every table and every Redis key, anonymous counts kept.

What erasure leaves: the ``users`` row with its id, ``erased_at`` set and email and name
nulled (so a late job for the user finds an erased user and skips, instead of retrying as for
an unknown one), the anonymous daily counts of the user's notification and delivery records,
and in the events stream the events that name the user by id only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import redis
from sqlalchemy import ColumnElement, Connection, Engine, Table, delete, func, insert, select, update

from jobs.notifications.retention import BATCH_ROWS, EMAIL_DELIVERIES, NOTIFICATION_LOG, Source, fold_batch
from worker.db.models import Base, EmailDelivery, NotificationLog, Suppression, User
from worker.keys import Keys

_SCAN_COUNT = 1000
_STREAM_PAGE = 1000
# Characters that may continue a host id inside a key or a value: "u1" must not match "u12".
_ID_CHAR = r"[A-Za-z0-9_\-]"


@dataclass(frozen=True)
class Erasure:
    """What one erasure removed: rows per table, Redis keys deleted, members and entries removed."""

    rows: dict[str, int]
    redis_keys: int
    redis_members: int
    stream_entries: int


class Mentions:
    """Whether a key or value names the user: by id (as a whole token) or by address."""

    def __init__(self, user_id: str, email: str | None) -> None:
        parts = [rf"(?<!{_ID_CHAR}){re.escape(user_id)}(?!{_ID_CHAR})"]
        if email:
            parts.append(re.escape(email))
        self._pattern = re.compile("|".join(parts).encode(), re.IGNORECASE)

    def __call__(self, value: bytes | str | None) -> bool:
        if value is None:
            return False
        data = value.encode() if isinstance(value, str) else value
        return self._pattern.search(data) is not None


def erase_user_rows(
    engine: Engine, user_id: str, now: datetime | None = None
) -> tuple[str | None, dict[str, int]]:
    """Erase the user in SQL in one transaction; return the address they had and rows removed.

    A user never seen gets an erased row, so that a `user.upsert` still on its way cannot
    bring their data back."""
    now = now or datetime.now(UTC)
    rows: dict[str, int] = {}
    with engine.begin() as connection:
        user = connection.execute(
            select(User.email, User.erased_at).where(User.id == user_id).with_for_update()
        ).one_or_none()
        if user is None:
            connection.execute(insert(User).values(_tombstone(user_id, now)))
            email = None
        else:
            email = user.email
        rows[NOTIFICATION_LOG.name] = _fold_all(
            connection, NOTIFICATION_LOG, NotificationLog.user_id == user_id
        )
        if email:
            rows[EMAIL_DELIVERIES.name] = _fold_all(
                connection, EMAIL_DELIVERIES, func.lower(EmailDelivery.recipient) == email.lower()
            )
            # The address is personal data; erased, the user receives nothing from here anyway.
            gone = connection.execute(
                delete(Suppression).where(func.lower(Suppression.address) == email.lower())
            )
            rows[Suppression.__tablename__] = gone.rowcount
        for table, column in _tables_owned_by_users():
            gone = connection.execute(delete(table).where(table.c[column] == user_id))
            rows[table.name] = rows.get(table.name, 0) + gone.rowcount
        if user is not None:
            connection.execute(
                update(User)
                .where(User.id == user_id)
                .values(_tombstone(user_id, user.erased_at or now, id_too=False))
            )
    return email, {name: n for name, n in rows.items() if n}


def _tombstone(user_id: str, erased_at: datetime, *, id_too: bool = True) -> dict[str, object]:
    values: dict[str, object] = {
        "email": None,
        "name": None,
        "timezone": "UTC",
        "locale": "en",
        "erased_at": erased_at,
        "updated_at": datetime.now(UTC),
    }
    if id_too:
        values.update(id=user_id, created_at=erased_at)
    return values


def _fold_all(connection: Connection, source: Source, where: ColumnElement[bool]) -> int:
    total = 0
    while True:
        n = fold_batch(connection, source, where, BATCH_ROWS)
        total += n
        if n < BATCH_ROWS:
            return total


def _tables_owned_by_users() -> Iterator[tuple[Table, str]]:
    """Every table with a column referencing ``users.id``, dependents first; found from the
    metadata so that a table added later is erased without a change here."""
    for table in reversed(Base.metadata.sorted_tables):
        if table.name == User.__tablename__:
            continue
        for fk in table.foreign_keys:
            if fk.column.table.name == User.__tablename__:
                yield table, fk.parent.name


def erase_user_keys(client: redis.Redis, keys: Keys, user_id: str, email: str | None) -> tuple[int, int, int]:
    """Remove every Redis key, member and stream entry naming the user; return counts of
    (keys deleted, members removed, stream entries removed). SCAN, never KEYS."""
    mentions = Mentions(user_id, email)
    skip = f"{keys.dramatiq_namespace}:".encode()
    streams = {keys.events.encode(), keys.intake.encode(), keys.rejected.encode()}
    deleted = members = 0
    named = [_glob(user_id)] + ([_glob(email)] if email else [])
    for pattern in [f"{_glob(keys.prefix)}:*{name}*" for name in named]:
        for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
            if key.startswith(skip) or key in streams or not mentions(key):
                continue
            deleted += int(client.delete(key))
    # Keys shared by users (due store, notification indexes) hold the user in their members.
    for key in client.scan_iter(match=f"{_glob(keys.prefix)}:notif:*", count=_SCAN_COUNT):
        members += _remove_members(client, key, mentions)
    removed_items = _remove_hash_fields(client, keys.due_items.encode(), mentions)
    if removed_items:
        members += len(removed_items) + int(client.zrem(keys.due, *removed_items))
    members += _remove_members(client, keys.due.encode(), mentions)
    entries = 0
    for stream in (keys.intake, keys.rejected):
        entries += _remove_entries(client, stream, mentions)
    # Events name users by id on purpose (the host's record); only an address is taken out.
    entries += _remove_entries(client, keys.events, Mentions("\0", email) if email else None)
    return deleted, members, entries


def _glob(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _remove_members(client: redis.Redis, key: bytes, mentions: Mentions) -> int:
    kind = client.type(key)
    if kind == b"string":
        return int(client.delete(key)) if mentions(client.get(key)) else 0
    if kind == b"hash":
        # A notification hash is one user's batch, delivery or claim: it goes whole, since a
        # batch stripped of some fields would be flushed half-formed.
        named = any(mentions(f) or mentions(v) for f, v in client.hscan_iter(key, count=_SCAN_COUNT))
        return int(client.delete(key)) if named else 0
    if kind == b"zset":
        gone = [m for m, _ in client.zscan_iter(key, count=_SCAN_COUNT) if mentions(m)]
        return int(client.zrem(key, *gone)) if gone else 0
    if kind == b"set":
        gone = [m for m in client.sscan_iter(key, count=_SCAN_COUNT) if mentions(m)]
        return int(client.srem(key, *gone)) if gone else 0
    if kind == b"list":
        values = {v for v in cast(list[bytes], client.lrange(key, 0, -1)) if mentions(v)}
        removed = 0
        for value in values:
            removed += int(client.lrem(key, 0, value))  # type: ignore[arg-type]
        return removed
    return 0


def _remove_hash_fields(client: redis.Redis, key: bytes | str, mentions: Mentions) -> list[bytes]:
    gone = [f for f, v in client.hscan_iter(key, count=_SCAN_COUNT) if mentions(f) or mentions(v)]
    if gone:
        client.hdel(key, *gone)
    return gone


def _remove_entries(client: redis.Redis, stream: str, mentions: Mentions | None) -> int:
    if mentions is None:
        return 0
    removed, start = 0, "-"
    while True:
        page = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            client.xrange(stream, min=start, max="+", count=_STREAM_PAGE),
        )
        gone = [entry for entry, fields in page if any(mentions(v) for v in fields.values())]
        if gone:
            removed += int(client.xdel(stream, *gone))
        if len(page) < _STREAM_PAGE:
            return removed
        start = "(" + page[-1][0].decode()


def erase_user(engine: Engine, client: redis.Redis, keys: Keys, user_id: str) -> Erasure:
    """Erase the user everywhere: SQL first, so that work racing the Redis sweep already sees
    the user as erased and skips instead of writing new keys."""
    email, rows = erase_user_rows(engine, user_id)
    deleted, members, entries = erase_user_keys(client, keys, user_id, email)
    return Erasure(rows=rows, redis_keys=deleted, redis_members=members, stream_entries=entries)
