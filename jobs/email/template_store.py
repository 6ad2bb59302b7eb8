"""Stored email templates: every `template.upsert` adds a version, the latest one is used.

Old versions are kept (``email_templates``, unique name and version) so that an email or a
campaign can be traced to the exact text it used. Where no template of a name is stored, the
built-in one of that name is used (jobs/email/builtin/).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import redis
from sqlalchemy import Engine, Select, func, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from jobs.email import builtin
from jobs.email.templating import TemplateSource, TemplatingError
from worker.db.models import EmailTemplate
from worker.db.session import make_sessionmaker

if TYPE_CHECKING:
    from worker.runtime import Runtime

T = TypeVar("T")


class TemplateStoreError(TemplatingError):
    """The database failed; the message has the driver's words, never the statement's values."""


def _source(row: EmailTemplate) -> TemplateSource:
    return TemplateSource(
        name=row.name, version=row.version, subject=row.subject, html=row.html, text=row.text
    )


def _latest_query(name: str) -> Select[EmailTemplate]:
    return (
        select(EmailTemplate)
        .where(EmailTemplate.name == name)
        .order_by(EmailTemplate.version.desc())
        .limit(1)
    )


class TemplateStore:
    def __init__(self, engine: Engine) -> None:
        self._sessions = make_sessionmaker(engine)

    def latest(self, name: str) -> TemplateSource | None:
        """The newest stored version of ``name``, or None."""
        row = self._run(lambda session: session.scalars(_latest_query(name)).first())
        return _source(row) if row is not None else None

    def get(self, name: str, version: int) -> TemplateSource | None:
        query = select(EmailTemplate).where(EmailTemplate.name == name, EmailTemplate.version == version)
        row = self._run(lambda session: session.scalars(query).first())
        return _source(row) if row is not None else None

    def versions(self, name: str) -> list[TemplateSource]:
        """Every stored version of ``name``, oldest first."""
        query = select(EmailTemplate).where(EmailTemplate.name == name).order_by(EmailTemplate.version)
        rows = self._run(lambda session: list(session.scalars(query)))
        return [_source(row) for row in rows]

    def add_version(self, name: str, subject: str, html: str | None, text: str | None) -> tuple[int, bool]:
        """Store a new version of ``name``; return its number and whether it is new.

        The same subject and bodies as the latest version add nothing and return that
        version: a job run twice (work is done at least once) stores one version.
        """
        return self._run(lambda session: _add(session, name, subject, html, text))

    def _run(self, work: Callable[[Session], T]) -> T:
        try:
            with self._sessions() as session, session.begin():
                return work(session)
        except SQLAlchemyError as exc:
            raise TemplateStoreError(f"email templates: {db_error_text(exc)}") from exc


def _add(session: Session, name: str, subject: str, html: str | None, text: str | None) -> tuple[int, bool]:
    if session.get_bind().dialect.name == "postgresql":
        # Upserts of one name racing would both read version n and both write n + 1: a lock
        # per name, held to the end of the transaction, puts them in a row. SQLite needs none:
        # its BEGIN IMMEDIATE (worker/db/session.py) serialises every writer.
        session.execute(select(func.pg_advisory_xact_lock(_lock_key(name))))
    latest = session.scalars(_latest_query(name)).first()
    if latest is not None and (latest.subject, latest.html, latest.text) == (subject, html, text):
        return latest.version, False
    version = (latest.version if latest is not None else 0) + 1
    session.add(EmailTemplate(name=name, version=version, subject=subject, html=html, text=text))
    session.flush()
    return version, True


def _lock_key(name: str) -> int:
    """A signed 64-bit key for PostgreSQL's advisory locks, the same in every process."""
    digest = hashlib.sha256(f"email_templates:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def db_error_text(exc: SQLAlchemyError) -> str:
    """What went wrong, in the driver's words."""
    # SQLAlchemy's own rendering carries the statement and its parameters (template text,
    # which may hold anything); the driver's first line names the problem without them.
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        lines = str(exc.orig).strip().splitlines()
        return f"{type(exc.orig).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return type(exc).__name__


def find_template(store: TemplateStore | None, name: str) -> TemplateSource | None:
    """The latest stored version of ``name``, else the built-in template, else None."""
    stored = store.latest(name) if store is not None else None
    return stored if stored is not None else builtin.load(name)


class LatestTemplates:
    """The latest version of each template, kept per process and checked against a token in
    Redis that every stored version replaces: one GET per email instead of a query.

    The token is a fresh random value each time (not a counter), so a Redis that lost it
    (restarted without persistence) gets a new one that matches no token cached before.
    """

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._client = client
        self._key = key
        self._lock = threading.Lock()
        self._token: bytes | None = None
        self._sources: dict[str, TemplateSource] = {}

    def get(self, engine: Engine, name: str) -> TemplateSource | None:
        """What `find_template` answers: the latest stored version, else the built-in one."""
        token: bytes | None = self._client.get(self._key)  # type: ignore[assignment]
        if token is None:  # none stored yet, or Redis lost it: start one (a racing one wins)
            self._client.set(self._key, uuid.uuid4().hex, nx=True)
            token = self._client.get(self._key)  # type: ignore[assignment]
        with self._lock:
            if token != self._token or token is None:
                self._sources.clear()
                self._token = token
            elif name in self._sources:
                return self._sources[name]
        source = find_template(TemplateStore(engine), name)
        if source is not None and token is not None:  # a miss is asked again: rare (NotReady)
            with self._lock:
                if self._token == token:
                    self._sources[name] = source
        return source

    def changed(self) -> None:
        """A version was stored: every process reads its templates afresh."""
        self._client.set(self._key, uuid.uuid4().hex)


_latest: dict[int, LatestTemplates] = {}
_latest_lock = threading.Lock()


def latest_templates(runtime: Runtime) -> LatestTemplates:
    """The template cache of this runtime (one per process; tests may run several runtimes)."""
    with _latest_lock:
        cache = _latest.get(id(runtime))
        if cache is None:
            cache = _latest[id(runtime)] = LatestTemplates(runtime.redis, runtime.keys.templates_token)
            weakref.finalize(runtime, _latest.pop, id(runtime), None)
        return cache
