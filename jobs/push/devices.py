"""A user's registered devices, from the `users` and `push_tokens` tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, delete, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from jobs.push.errors import PushError
from worker.db.models import PushToken, User
from worker.errors import NotReady


@dataclass(frozen=True)
class Device:
    token: str
    platform: str


class DeviceStoreError(PushError):
    """The database failed reading or removing devices."""


def _cause(exc: SQLAlchemyError) -> BaseException | None:
    """The driver's error, to chain: SQLAlchemy's own message quotes the statement's parameters,
    the registration token among them, and a chained cause is printed with the traceback."""
    return exc.orig if isinstance(exc, DBAPIError) else None


def registered_devices(engine: Engine, user_id: str) -> list[Device] | None:
    """The user's devices, oldest first; None for an erased user; NotReady for an unknown one."""
    try:
        with Session(engine) as session:
            user = session.get(User, user_id)
            if user is None:
                raise NotReady(f"user {user_id!r} is not known yet")
            if user.erased_at is not None:
                return None
            rows = session.execute(
                select(PushToken.token, PushToken.platform)
                .where(PushToken.user_id == user_id)
                .order_by(PushToken.id)
            ).all()
    except SQLAlchemyError as exc:
        raise DeviceStoreError(
            f"reading the devices of user {user_id!r} failed: {type(exc).__name__}"
        ) from _cause(exc)
    return [Device(token=token, platform=platform) for token, platform in rows]


def remove_device(engine: Engine, user_id: str, token: str) -> bool:
    """Forget a token FCM reported unregistered; False when it was already gone."""
    try:
        with Session(engine) as session, session.begin():
            result = cast(
                CursorResult[Any],
                session.execute(
                    delete(PushToken).where(PushToken.user_id == user_id, PushToken.token == token)
                ),
            )
    except SQLAlchemyError as exc:
        raise DeviceStoreError(
            f"removing a device of user {user_id!r} failed: {type(exc).__name__}"
        ) from _cause(exc)
    return result.rowcount > 0
