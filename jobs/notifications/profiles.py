"""The read side of users: one user's profile as the notification path needs it.

A load is two primary-key lookups through statements built once, for one user (136 us of CPU on
SQLite) or for a batch's users at once; ``ProfileCache`` saves most of them on the hot path. A
profile is cached under a token that Redis keeps per user (``NotifKeys.profile``) and that every
write of the user's profile replaces (``touch``: user.upsert, also for a user whose device moved
to another, and preferences.update; user.delete removes it with every key naming the user). The
notification path reads the token in the script it runs anyway (the snapshot), so a cached
profile costs no round trip and is never older than the last write it could see. A device FCM
reports unregistered does not replace it: push.send reads the devices afresh, so a cached list
only decides whether a push is tried.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
from sqlalchemy import Engine, Row, bindparam, select

from jobs.notifications.keys import NotifKeys
from jobs.notifications.preferences import Preferences
from worker.db.models import Preferences as PreferencesRow
from worker.db.models import PushToken, User

# Built once with a bound parameter: building the WHERE clause per call (and its cache key) cost
# a tenth of a notification's CPU.
_USER = (
    select(
        User.id,
        User.email,
        User.name,
        User.timezone,
        User.locale,
        User.erased_at,
        PreferencesRow.channels,
        PreferencesRow.categories,
        PreferencesRow.quiet_hours,
        PreferencesRow.caps,
        PreferencesRow.dnd_until,
        PreferencesRow.digest_mode,
        PreferencesRow.digest_at,
        PreferencesRow.user_id.label("has_preferences"),
    )
    .outerjoin(PreferencesRow, PreferencesRow.user_id == User.id)
    .where(User.id.in_(bindparam("user_ids", expanding=True)))
)

_TOKENS = (
    select(PushToken.user_id, PushToken.token)
    .where(PushToken.user_id.in_(bindparam("user_ids", expanding=True)))
    .order_by(PushToken.id)
)


@dataclass(frozen=True, slots=True)
class Profile:
    """A user as notifications see them. An erased user keeps only the id: no email, no name,
    no tokens, default preferences, and ``erased`` True so that late work for them is skipped."""

    user_id: str
    email: str | None
    name: str | None
    timezone: ZoneInfo
    locale: str
    preferences: Preferences
    push_tokens: tuple[str, ...]
    erased: bool


def load_profile(engine: Engine, user_id: str) -> Profile | None:
    """The user's profile, or None for a user no `user.upsert` (or `user.delete`) has named."""
    return load_profiles(engine, [user_id]).get(user_id)


def load_profiles(engine: Engine, user_ids: Collection[str]) -> dict[str, Profile]:
    """The profiles of these users, in two queries whatever their number; a user no `user.upsert`
    (or `user.delete`) has named is left out."""
    if not user_ids:
        return {}
    ids = list(user_ids)
    with engine.connect() as connection:
        rows = connection.execute(_USER, {"user_ids": ids}).all()
        if not rows:
            return {}
        tokens: dict[str, list[str]] = {}
        for owner, token in connection.execute(_TOKENS, {"user_ids": [row.id for row in rows]}):
            tokens.setdefault(owner, []).append(token)
    return {
        row.id: Profile(
            user_id=row.id,
            email=row.email,
            name=row.name,
            timezone=_zone(row.timezone),
            locale=row.locale,
            preferences=preferences_from_row(row) if row.has_preferences is not None else Preferences(),
            push_tokens=tuple(tokens.get(row.id, ())),
            erased=row.erased_at is not None,
        )
        for row in rows
    }


def preferences_from_row(row: Row[Any] | PreferencesRow) -> Preferences:
    """The stored preferences as one value (the row's JSON was validated when written)."""
    return Preferences.model_validate(
        {
            "channels": row.channels or {},
            "categories": row.categories or {},
            "quiet_hours": row.quiet_hours or None,
            "caps": row.caps or {},
            "dnd_until": row.dnd_until,
            "digest": row.digest_mode,
            "digest_at": row.digest_at,
        }
    )


def preferences_to_row(preferences: Preferences) -> dict[str, Any]:
    """The column values that store ``preferences``."""
    dumped = preferences.model_dump(mode="json")
    return {
        "channels": dumped["channels"],
        "categories": dumped["categories"],
        "quiet_hours": dumped["quiet_hours"] or {},
        "caps": {name: value for name, value in dumped["caps"].items() if value is not None},
        "dnd_until": preferences.dnd_until,
        "digest_mode": preferences.digest,
        "digest_at": preferences.digest_at,
    }


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # Validated at intake; a zone a later tzdata dropped should not stop every notification.
        return ZoneInfo("UTC")


# A user's token lives this long after the last read that set it or write that replaced it.
TOKEN_TTL_S = 3600
# Entries kept at most (then all are dropped), and how long one is kept without being read.
CACHE_MAX = 50_000
CACHE_IDLE_S = 600.0


def touch(client: redis.Redis, keys: NotifKeys, user_ids: Iterable[str]) -> None:
    """After a write of these users' profiles is committed: cached copies are stale."""
    pipe = client.pipeline(transaction=False)
    for user_id in dict.fromkeys(user_ids):
        pipe.set(keys.profile(user_id), uuid.uuid4().hex, ex=TOKEN_TTL_S)
    pipe.execute()


class ProfileCache:
    """Profiles this process read, each good while the user's token is the one read with it."""

    def __init__(self, client: redis.Redis, keys: NotifKeys) -> None:
        self._client = client
        self._keys = keys
        self._entries: dict[str, tuple[str, Profile, float]] = {}
        self._next_sweep = time.monotonic() + CACHE_IDLE_S

    def get(self, engine: Engine, user_id: str, token: str) -> Profile | None:
        """The profile, from the cache when ``token`` (read from Redis just now) is its token."""
        return self.get_many(engine, [(user_id, token)]).get(user_id)

    def get_many(self, engine: Engine, wanted: Iterable[tuple[str, str]]) -> dict[str, Profile | None]:
        """The profiles of (user, token read from Redis just now) pairs: each from the cache when
        the token is its token, the others read together (a batch's users, at a cold start or
        after their tokens' hour, cost two queries instead of two each)."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        out: dict[str, Profile | None] = {}
        stale: dict[str, str] = {}  # user -> token, for a token the cache does not hold
        first: list[str] = []  # users with no token yet
        for user_id, token in wanted:
            if user_id in out or user_id in stale or user_id in first:
                continue
            hit = self._entries.get(user_id) if token else None
            if hit is not None and hit[0] == token:
                self._entries[user_id] = (token, hit[1], now)
                out[user_id] = hit[1]
            elif token:
                stale[user_id] = token
            else:
                first.append(user_id)
        if not stale and not first:
            return out
        # A user without a token gets one before the read, and the read is kept only when the
        # token is still ours after it. Made after the read, the token could outlive a
        # `user.delete` committed in between (it removes the token): a key naming an erased
        # user, and the profile before the erasure cached under it for an hour.
        mine = self._make_tokens(first)
        loaded = load_profiles(engine, [*stale, *first])
        ours = self._still_ours(mine)
        gone: list[str] = []
        for user_id in [*stale, *first]:
            profile = loaded.get(user_id)
            out[user_id] = profile
            if profile is None or profile.erased:
                # Unknown, or erased: nothing is kept, and no key naming the user comes back.
                self._entries.pop(user_id, None)
                if user_id in mine:
                    gone.append(user_id)
            elif user_id in stale:
                self._keep(user_id, stale[user_id], profile, now)
            elif user_id in ours:
                self._keep(user_id, mine[user_id], profile, now)
            else:  # a write's token came first, or replaced ours: read, keep nothing
                self._entries.pop(user_id, None)
        if gone:
            self._client.delete(*(self._keys.profile(user_id) for user_id in gone))
        return out

    def _make_tokens(self, user_ids: Sequence[str]) -> dict[str, str]:
        """A new token for each user that has none (SET NX): user -> the token we set."""
        if not user_ids:
            return {}
        made = {user_id: uuid.uuid4().hex for user_id in user_ids}
        pipe = self._client.pipeline(transaction=False)
        for user_id, token in made.items():
            pipe.set(self._keys.profile(user_id), token, nx=True, ex=TOKEN_TTL_S)
        return {user_id: made[user_id] for user_id, ok in zip(made, pipe.execute(), strict=True) if ok}

    def _still_ours(self, mine: dict[str, str]) -> set[str]:
        if not mine:
            return set()
        current = self._client.mget([self._keys.profile(user_id) for user_id in mine])
        pairs = zip(mine.items(), current, strict=True)
        return {user_id for (user_id, token), found in pairs if found == token.encode()}

    def _keep(self, user_id: str, token: str, profile: Profile, now: float) -> None:
        if len(self._entries) >= CACHE_MAX:
            self._entries.clear()
        self._entries[user_id] = (token, profile, now)

    def _sweep(self, now: float) -> None:
        """Drop the entries no one read lately (an erased user's among them)."""
        self._next_sweep = now + CACHE_IDLE_S
        for user_id, (_, _, used) in list(self._entries.items()):
            if now - used > CACHE_IDLE_S:
                self._entries.pop(user_id, None)
