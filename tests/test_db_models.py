"""Models on the migrated schema: round trips, UTC datetimes, constraints, cascades."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from worker.db import migrate
from worker.db.models import (
    EmailDelivery,
    EmailTemplate,
    OAuthConnection,
    Preferences,
    PushToken,
    Task,
    User,
)
from worker.db.session import database_url, make_engine, make_sessionmaker

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a database upgraded by the migrations (not create_all: the real schema)."""
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def add_user(sessions: sessionmaker[Session], user_id: str = "u1") -> None:
    with sessions.begin() as session:
        session.add(User(id=user_id, email=f"{user_id}@example.com", name="Ada", timezone="Europe/Paris"))


def test_round_trip_user_preferences_and_task(sessions: sessionmaker[Session]) -> None:
    """A user, their preferences and a task come back as written, JSON and times included."""
    due = datetime(2024, 7, 1, 9, 30, tzinfo=PARIS)
    with sessions.begin() as session:
        session.add(User(id="u1", email="ada@example.com", name="Ada", timezone="Europe/Paris", locale="fr"))
        session.add(
            Preferences(
                user_id="u1",
                channels={"email": True, "push": False},
                quiet_hours={"start": "22:00", "end": "07:00"},
                digest_mode="daily",
                digest_at=time(8, 0),
            )
        )
        session.add(Task(id="t1", user_id="u1", title="Write report", due_at=due, tags=["work", "q3"]))

    with sessions() as session:
        user = session.get_one(User, "u1")
        prefs = session.get_one(Preferences, "u1")
        task = session.get_one(Task, "t1")

    assert (user.email, user.locale, user.erased_at) == ("ada@example.com", "fr", None)
    assert user.created_at.tzinfo is UTC
    assert prefs.channels == {"email": True, "push": False}
    assert prefs.quiet_hours == {"start": "22:00", "end": "07:00"}
    assert (prefs.digest_mode, prefs.digest_at, prefs.caps) == ("daily", time(8, 0), {})
    assert task.tags == ["work", "q3"]
    assert task.due_at == due
    assert task.due_at is not None and task.due_at.tzinfo is UTC
    assert task.due_at == datetime(2024, 7, 1, 7, 30, tzinfo=UTC)


def test_aware_datetimes_compare_as_instants(sessions: sessionmaker[Session]) -> None:
    """Times given in different zones are stored in UTC, so SQL orders and filters them as instants."""
    add_user(sessions)
    # 10:00 in Kolkata is earlier than 08:00 in Paris the same day: wall clocks disagree.
    kolkata = timezone(timedelta(hours=5, minutes=30))
    with sessions.begin() as session:
        session.add(
            Task(id="paris", user_id="u1", title="p", due_at=datetime(2024, 1, 5, 8, 0, tzinfo=PARIS))
        )
        session.add(
            Task(id="kolkata", user_id="u1", title="k", due_at=datetime(2024, 1, 5, 10, 0, tzinfo=kolkata))
        )

    cutoff = datetime(2024, 1, 5, 6, 0, tzinfo=UTC)
    with sessions() as session:
        ordered = session.scalars(sa.select(Task.id).order_by(Task.due_at)).all()
        before_cutoff = session.scalars(sa.select(Task.id).where(Task.due_at < cutoff)).all()

    assert ordered == ["kolkata", "paris"]
    assert before_cutoff == ["kolkata"]


def test_naive_datetime_is_refused(sessions: sessionmaker[Session]) -> None:
    """A naive datetime is a caller's bug: it is refused rather than guessed to be UTC."""
    add_user(sessions)
    with sessions() as session:
        session.add(Task(id="t1", user_id="u1", title="x", due_at=datetime(2024, 1, 1, 12, 0)))
        with pytest.raises(StatementError, match="naive datetime"):
            session.flush()


def test_encrypted_columns_hold_bytes(sessions: sessionmaker[Session]) -> None:
    """Token columns are binary: ciphertext bytes come back unchanged."""
    add_user(sessions)
    ciphertext = bytes(range(256))
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    with sessions.begin() as session:
        session.add(
            OAuthConnection(
                user_id="u1",
                provider="google",
                access_token=ciphertext,
                expires_at=expires,
                scopes=["calendar"],
            )
        )

    with sessions() as session:
        connection = session.scalars(sa.select(OAuthConnection)).one()

    assert (connection.access_token, connection.refresh_token) == (ciphertext, None)
    assert (connection.expires_at, connection.status, connection.scopes) == (expires, "active", ["calendar"])


def test_unknown_provider_is_refused(sessions: sessionmaker[Session]) -> None:
    """The provider column accepts only the providers of the public contract."""
    add_user(sessions)
    with sessions() as session:
        session.add(OAuthConnection(user_id="u1", provider="myspace", access_token=b"x"))
        with pytest.raises(IntegrityError):
            session.flush()


def test_delivery_unique_per_idempotency_key_and_recipient(sessions: sessionmaker[Session]) -> None:
    """The same idempotency key may go to several recipients, but to each one only once."""
    with sessions.begin() as session:
        session.add(EmailDelivery(idempotency_key="k1", message_id="<1@x>", recipient="a@example.com"))
        session.add(EmailDelivery(idempotency_key="k1", message_id="<1@x>", recipient="b@example.com"))

    with sessions() as session:
        session.add(EmailDelivery(idempotency_key="k1", message_id="<2@x>", recipient="a@example.com"))
        with pytest.raises(IntegrityError):
            session.flush()


def test_delivery_status_is_checked(sessions: sessionmaker[Session]) -> None:
    """A delivery status outside the documented ones is refused by the database."""
    with sessions() as session:
        session.add(
            EmailDelivery(idempotency_key="k", message_id="<m>", recipient="a@example.com", status="lost")
        )
        with pytest.raises(IntegrityError):
            session.flush()


def test_template_versions_are_kept(sessions: sessionmaker[Session]) -> None:
    """Several versions of a template coexist; the same version twice does not."""
    with sessions.begin() as session:
        session.add(EmailTemplate(name="welcome", version=1, subject="Hi"))
        session.add(EmailTemplate(name="welcome", version=2, subject="Hello"))

    with sessions() as session:
        session.add(EmailTemplate(name="welcome", version=2, subject="Again"))
        with pytest.raises(IntegrityError):
            session.flush()


def test_deleting_a_user_cascades(sessions: sessionmaker[Session]) -> None:
    """Deleting a user removes what belongs to them (foreign keys are enforced on SQLite too)."""
    add_user(sessions)
    with sessions.begin() as session:
        session.add(PushToken(user_id="u1", token="tok", platform="android"))
        session.add(Preferences(user_id="u1"))

    with sessions.begin() as session:
        session.execute(sa.delete(User).where(User.id == "u1"))

    with sessions() as session:
        assert session.scalars(sa.select(PushToken)).all() == []
        assert session.get(Preferences, "u1") is None


def test_task_for_unknown_user_is_refused(sessions: sessionmaker[Session]) -> None:
    """A row pointing at a user that does not exist is refused (foreign keys enforced)."""
    with sessions() as session:
        session.add(Task(id="t1", user_id="nobody", title="x"))
        with pytest.raises(IntegrityError):
            session.flush()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///var/taskmaster.db", "sqlite:///var/taskmaster.db"),
    ],
)
def test_database_url_names_the_installed_driver(given: str, expected: str) -> None:
    """A PostgreSQL URL without a driver gets psycopg 3, the driver this distribution installs."""
    assert database_url(given).render_as_string() == expected
