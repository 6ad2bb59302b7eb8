"""The `user.upsert`, `preferences.update` and `user.delete` jobs."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from jobs.notifications.erasure import erase_user
from jobs.notifications.keys import NotifKeys
from jobs.notifications.models import PreferencesUpdate, UserDelete, UserUpsert
from jobs.notifications.preferences import Preferences, merge
from jobs.notifications.profiles import preferences_from_row, preferences_to_row, touch
from worker.context import JobContext
from worker.db.models import Preferences as PreferencesRow
from worker.db.models import PushToken, User
from worker.errors import NotReady
from worker.logging import get_logger
from worker.registry import job

log = get_logger(__name__)

UNKNOWN_PLATFORM = "unknown"


@job("user.upsert", UserUpsert, queue="default")
def upsert_user(ctx: JobContext, data: UserUpsert) -> None:
    """Insert or update the user; a push token list replaces the user's tokens."""
    try:
        written = _upsert(ctx, data)
    except IntegrityError:
        # Two upserts of a new user (or of one device token) raced; the second now updates.
        written = _upsert(ctx, data)
    if written is None:
        log.info("user.upsert_skipped", user_id=data.user_id, reason="erased")
        ctx.emit("user.upserted", {"user_id": data.user_id, "skipped": "erased"})
        return
    touch(ctx.runtime.redis, NotifKeys(ctx.runtime.settings.redis_prefix), [data.user_id, *written])
    ctx.emit("user.upserted", {"user_id": data.user_id})


def _upsert(ctx: JobContext, data: UserUpsert) -> list[str] | None:
    """Write the user; None when erased, else the other users whose devices moved to this one."""
    now = datetime.now(UTC)
    values = {"email": data.email, "name": data.name, "timezone": data.timezone, "locale": data.locale}
    with ctx.runtime.db.begin() as connection:
        erased_at = connection.execute(
            select(User.erased_at).where(User.id == data.user_id).with_for_update()
        ).one_or_none()
        if erased_at is not None and erased_at[0] is not None:
            # An erased user stays erased: this upsert was overtaken by `user.delete`.
            return None
        if erased_at is None:
            connection.execute(insert(User).values(id=data.user_id, created_at=now, updated_at=now, **values))
        else:
            connection.execute(update(User).where(User.id == data.user_id).values(updated_at=now, **values))
        if data.push_tokens is not None:
            return _replace_tokens(connection, data, now)
    return []


def _replace_tokens(connection: Connection, data: UserUpsert, now: datetime) -> list[str]:
    """Replace the user's devices; return the other users who lost one to this user."""
    tokens = {t.token: t.platform or UNKNOWN_PLATFORM for t in data.push_tokens or []}
    # A token another user had moves to this one: a device that changed hands.
    mine_or_moving = or_(PushToken.user_id == data.user_id, PushToken.token.in_(tokens))
    owners = connection.execute(delete(PushToken).where(mine_or_moving).returning(PushToken.user_id))
    moved_from = sorted({owner for owner in owners.scalars() if owner != data.user_id})
    if tokens:
        connection.execute(
            insert(PushToken),
            [
                {"user_id": data.user_id, "token": t, "platform": p, "created_at": now, "updated_at": now}
                for t, p in tokens.items()
            ],
        )
    return moved_from


@job("preferences.update", PreferencesUpdate, queue="default")
def update_preferences(ctx: JobContext, data: PreferencesUpdate) -> None:
    """Merge a partial update into the user's preferences; wait for a user not known yet."""
    with ctx.runtime.db.begin() as connection:
        user = connection.execute(select(User.erased_at).where(User.id == data.user_id)).one_or_none()
        if user is None:
            raise NotReady(f"user {data.user_id!r} is not known yet; its user.upsert may be on its way")
        if user.erased_at is not None:
            log.info("preferences.update_skipped", user_id=data.user_id, reason="erased")
            ctx.emit("preferences.updated", {"user_id": data.user_id, "skipped": "erased"})
            return
        # FOR UPDATE: two partial updates racing must both land, not the later overwrite the earlier.
        row = connection.execute(
            select(*PreferencesRow.__table__.c)
            .where(PreferencesRow.user_id == data.user_id)
            .with_for_update()
        ).one_or_none()
        stored = preferences_from_row(row) if row is not None else Preferences()
        values = {**preferences_to_row(merge(stored, data)), "updated_at": datetime.now(UTC)}
        if row is None:
            connection.execute(insert(PreferencesRow).values(user_id=data.user_id, **values))
        else:
            connection.execute(
                update(PreferencesRow).where(PreferencesRow.user_id == data.user_id).values(**values)
            )
    touch(ctx.runtime.redis, NotifKeys(ctx.runtime.settings.redis_prefix), [data.user_id])
    ctx.emit("preferences.updated", {"user_id": data.user_id})


@job("user.delete", UserDelete, queue="default")
def delete_user(ctx: JobContext, data: UserDelete) -> None:
    """Erase the user's personal data everywhere; anonymous counts stay."""
    runtime = ctx.runtime
    erasure = erase_user(runtime.db, runtime.redis, runtime.keys, data.user_id)
    log.info(
        "user.erased",
        user_id=data.user_id,
        rows=erasure.rows,
        redis_keys=erasure.redis_keys,
        redis_members=erasure.redis_members,
        stream_entries=erasure.stream_entries,
    )
    ctx.emit("user.deleted", {"user_id": data.user_id, "rows": erasure.rows})
