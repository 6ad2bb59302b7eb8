"""Webhook endpoints in SQL (secret encrypted), and the previous secret of a rotation in Redis.

The table has no column for a second secret, and the previous one is needed for 24 hours only:
Redis keeps it, encrypted as in the table, under a key that expires on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import redis
from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from jobs.webhooks.errors import WebhookError
from jobs.webhooks.keys import ROTATION_OVERLAP_S, WebhookKeys
from jobs.webhooks.models import EndpointUpsert
from worker.crypto import DecryptionError, SecretBox
from worker.db.models import User, WebhookEndpoint
from worker.db.session import make_sessionmaker
from worker.errors import NotReady
from worker.logging import get_logger
from worker.runtime import Runtime

log = get_logger(__name__)


class StoreError(WebhookError):
    """The database or Redis failed while reading or writing endpoints (retried by the runtime)."""


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    enabled: bool
    failing_since: datetime | None
    # The current secret first, then the previous one while a rotation's overlap lasts.
    secrets: tuple[str, ...] = field(repr=False)


@dataclass(frozen=True)
class FailureState:
    failing_since: datetime
    disabled_now: bool  # this failure is the one that disabled the endpoint
    enabled: bool


class EndpointStore:
    def __init__(self, engine: Engine, box: SecretBox, client: redis.Redis, keys: WebhookKeys) -> None:
        self._sessions = make_sessionmaker(engine)
        self._box = box
        self._redis = client
        self._keys = keys

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise StoreError(f"{doing}: database error ({type(exc).__name__})") from exc
        except redis.RedisError as exc:
            raise StoreError(f"{doing}: Redis error ({type(exc).__name__})") from exc

    def upsert(self, data: EndpointUpsert) -> bool:
        """Create or replace the endpoint, enabled; True when its secret changed (a rotation)."""
        secret = data.secret.get_secret_value()
        doing = f"upsert of webhook endpoint {data.endpoint_id!r}"
        with self._translated(doing), self._sessions.begin() as s:
            if data.user_id is not None and s.get(User, data.user_id) is None:
                raise NotReady(
                    f"user {data.user_id!r} of webhook endpoint {data.endpoint_id!r} is not known yet"
                )
            row = s.get(WebhookEndpoint, data.endpoint_id, with_for_update=True)
            rotated = False
            if row is None:
                row = WebhookEndpoint(id=data.endpoint_id, secret=self._box.encrypt(secret))
                s.add(row)
            else:
                old = self._decrypted(row.secret)
                if old is not None and old != secret:
                    rotated = True
                    # Before the commit: were Redis to fail after it, the old secret would be
                    # lost while receivers still verify with it. Encrypted: stored as it is.
                    self._redis.set(self._keys.previous_secret(row.id), row.secret, ex=ROTATION_OVERLAP_S)
                if old != secret:
                    row.secret = self._box.encrypt(secret)
            row.url = data.url
            row.user_id = data.user_id
            row.categories = list(data.categories)
            row.enabled = True
            row.failing_since = None
        return rotated

    def delete(self, endpoint_id: str) -> bool:
        """Remove the endpoint; False when there was none."""
        with self._translated(f"delete of webhook endpoint {endpoint_id!r}"):
            with self._sessions.begin() as s:
                row = s.get(WebhookEndpoint, endpoint_id)
                if row is not None:
                    s.delete(row)
            self._redis.delete(self._keys.previous_secret(endpoint_id))
        return row is not None

    def load(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint with its secrets decrypted; DecryptionError when the current one fails."""
        with self._translated(f"read of webhook endpoint {endpoint_id!r}"):
            with self._sessions() as s:
                row = s.get(WebhookEndpoint, endpoint_id)
            if row is None:
                return None
            previous = self._redis.get(self._keys.previous_secret(endpoint_id))
        secrets = [self._box.decrypt(row.secret)]
        if isinstance(previous, bytes):
            old = self._decrypted(previous)
            if old is not None and old not in secrets:
                secrets.append(old)
        return Endpoint(row.id, row.url, row.enabled, row.failing_since, tuple(secrets))

    def matching(self, user_id: str | None, category: str | None) -> list[str]:
        """Ids of the enabled endpoints that take this user's events of this category.

        An endpoint without a user takes every user's events; one without categories takes
        every category. An event of no user or no category reaches only endpoints that do
        not filter on it.
        """
        query = select(WebhookEndpoint.id, WebhookEndpoint.categories)
        query = query.where(WebhookEndpoint.enabled.is_(True))
        if user_id is None:
            query = query.where(WebhookEndpoint.user_id.is_(None))
        else:
            query = query.where(or_(WebhookEndpoint.user_id.is_(None), WebhookEndpoint.user_id == user_id))
        with self._translated("webhook endpoint lookup"), self._sessions() as s:
            rows = s.execute(query.order_by(WebhookEndpoint.id)).all()
        return [
            endpoint_id
            for endpoint_id, categories in rows
            if not categories or (category is not None and category in categories)
        ]

    def record_failure(self, endpoint_id: str, now: datetime, disable_after_s: float) -> FailureState | None:
        """Note a failed attempt; disable the endpoint once it has failed for ``disable_after_s``."""
        with self._translated(f"failure of webhook endpoint {endpoint_id!r}"), self._sessions.begin() as s:
            row = s.get(WebhookEndpoint, endpoint_id, with_for_update=True)
            if row is None:
                return None
            if row.failing_since is None:
                row.failing_since = now
            disabled_now = row.enabled and (now - row.failing_since).total_seconds() > disable_after_s
            if disabled_now:
                row.enabled = False
            return FailureState(row.failing_since, disabled_now, row.enabled)

    def record_success(self, endpoint_id: str) -> None:
        with self._translated(f"success of webhook endpoint {endpoint_id!r}"), self._sessions.begin() as s:
            s.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.failing_since.is_not(None))
                .values(failing_since=None)
            )

    def disable(self, endpoint_id: str) -> bool:
        """Disable the endpoint now; True when this call disabled it."""
        with self._translated(f"disabling webhook endpoint {endpoint_id!r}"), self._sessions.begin() as s:
            result = s.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.enabled.is_(True))
                .values(enabled=False)
            )
        return bool(getattr(result, "rowcount", 0))

    def _decrypted(self, token: bytes) -> str | None:
        try:
            return self._box.decrypt(token)
        except DecryptionError:
            log.warning("webhook.secret_undecryptable")
            return None


def endpoint_store(runtime: Runtime) -> EndpointStore:
    settings = runtime.settings
    return EndpointStore(
        runtime.db, SecretBox.from_settings(settings), runtime.redis, WebhookKeys(settings.redis_prefix)
    )


class EndpointOwners:
    """Whose events an enabled endpoint takes, read at most once a second.

    The notification path asks for every notification whether a webhook could reach its user at
    all; without an endpoint for them (nor one for every user) the webhook channel is suppressed
    (`no_address`) instead of holding digests that nobody would receive. An endpoint added
    meanwhile takes effect within that second.
    """

    RECHECK_S = 1.0

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._until = 0.0  # monotonic time until which the owners below stand
        self._everyone = False
        self._users: frozenset[str] = frozenset()

    def reach(self, user_id: str) -> bool:
        if time.monotonic() >= self._until:
            with self._lock:
                if time.monotonic() >= self._until:
                    self._load()
        return self._everyone or user_id in self._users

    def _load(self) -> None:
        query = select(WebhookEndpoint.user_id).where(WebhookEndpoint.enabled.is_(True)).distinct()
        with self._engine.connect() as connection:
            owners = set(connection.execute(query).scalars())
        self._everyone = None in owners
        self._users = frozenset(o for o in owners if o is not None)
        self._until = time.monotonic() + self.RECHECK_S
