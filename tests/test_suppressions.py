"""The suppression list: its API for the sender, the host's jobs, the bounce path, the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from jobs.email.tracking import suppressions
from tests.helpers import events, read_stream, wait_for
from tests.test_tracking_events import (
    POSTMARK_BOUNCE,
    Tracking,
    sendgrid_event,
    tracking,  # noqa: F401  (the fixture)
)
from tests.test_tracking_verify import JOB_MODULES
from worker.cli.main import main
from worker.db import migrate
from worker.db.session import make_engine, make_sessionmaker


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a database upgraded by the migrations."""
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_suppression_api(sessions: sessionmaker[Session]) -> None:
    """add, suppressed, remove and listing: case-insensitive, first reason kept, idempotent."""
    with sessions.begin() as session:
        assert suppressions.add(
            session, "Ann@Example.com", "bounce", provider="postmark", source_event_id="e1"
        )
        assert not suppressions.add(session, "ann@example.COM", "manual")
        assert suppressions.add(session, "bob@example.com", "complaint", provider="sendgrid")
        assert suppressions.add(session, "cy@example.com", "manual")
        with pytest.raises(ValueError, match="reason must be one of bounce, complaint, manual"):
            suppressions.add(session, "dee@example.com", "annoying")

    with sessions() as session:
        many = [f"user{n}@example.com" for n in range(1200)] + ["ANN@example.com", "cy@example.com"]
        assert suppressions.suppressed(session, many) == {
            "ANN@example.com": "bounce",
            "cy@example.com": "manual",
        }
        assert suppressions.suppressed(session, []) == {}
        rows = suppressions.listing(session)
        assert [(r.address, r.reason, r.provider) for r in rows] == [
            ("ann@example.com", "bounce", "postmark"),
            ("bob@example.com", "complaint", "sendgrid"),
            ("cy@example.com", "manual", None),
        ]
        assert rows[0].source_event_id == "e1" and rows[0].created_at.tzinfo is not None
        assert [r.address for r in suppressions.listing(session, reason="complaint")] == ["bob@example.com"]

    with sessions.begin() as session:
        assert suppressions.remove(session, "ANN@example.com")
        assert not suppressions.remove(session, "ann@example.com")
    with sessions() as session:
        assert suppressions.suppressed(session, ["ann@example.com"]) == {}


def of_type(client: redis.Redis, event_type: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events(client) if e["type"] == event_type]


def test_host_adds_and_lifts_a_suppression(
    tracking: Tracking,  # noqa: F811
    redis_client: redis.Redis,
) -> None:
    """suppression.add suppresses (once), suppression.delete lifts it; each reports its outcome."""
    # When: the host adds an address twice, then lifts it twice.
    tracking.submit(redis_client, "suppression.add", {"address": "Ann@Example.com"}, job_id="add-1")
    wait_for(lambda: of_type(redis_client, "suppression.added"), what="suppression.added")
    with tracking.sessions() as session:
        assert suppressions.suppressed(session, ["ann@example.com"]) == {"ann@example.com": "manual"}
    for job_type, data in [
        ("suppression.add", {"address": "ann@example.com", "reason": "complaint"}),
        ("suppression.delete", {"address": "ANN@example.com"}),
        ("suppression.delete", {"address": "ann@example.com"}),
    ]:
        tracking.submit(redis_client, job_type, data)
        tracking.settle()  # one at a time: their order is what is tested

    # Then
    first, second = of_type(redis_client, "suppression.added")
    assert first["address"] == "ann@example.com" and first["reason"] == "manual" and first["new"] is True
    assert first["id"] == "add-1" and first["job_type"] == "suppression.add"
    assert second["new"] is False
    assert [d["found"] for d in of_type(redis_client, "suppression.deleted")] == [True, False]
    with tracking.sessions() as session:
        assert suppressions.suppressed(session, ["ann@example.com"]) == {}


def test_intake_rejects_a_bad_suppression(tracking: Tracking, redis_client: redis.Redis) -> None:  # noqa: F811
    """An address that is not one, or an unknown reason, is rejected at intake."""
    tracking.submit(redis_client, "suppression.add", {"address": "nope"})
    tracking.submit(redis_client, "suppression.add", {"address": "a@example.com", "reason": "dislike"})
    tracking.submit(redis_client, "suppression.delete", {})

    errors = [fields["error"] for _, fields in read_stream(redis_client, "taskmaster:intake:rejected")]
    assert "data.address: 'nope' is not a valid email address" in errors[0]
    assert "data.reason: Input should be 'bounce', 'complaint' or 'manual'" in errors[1]
    assert "data.address: missing (required)" in errors[2]


def test_hard_bounce_and_complaint_suppress_until_lifted(
    tracking: Tracking,  # noqa: F811
    redis_client: redis.Redis,
) -> None:
    """Given provider events, when recorded, a hard bounce and a complaint suppress their address, a
    soft bounce does not; once the host lifts one, a new hard bounce suppresses it again."""
    # Given / When
    tracking.post(redis_client, "postmark", POSTMARK_BOUNCE)
    tracking.post(
        redis_client, "postmark", {**POSTMARK_BOUNCE, "Type": "SoftBounce", "Email": "soft@example.com"}
    )
    tracking.post(
        redis_client, "sendgrid", [sendgrid_event("spamreport", "spam-1", email="spam@example.com")]
    )
    tracking.settle()

    # Then
    with tracking.sessions() as session:
        found = suppressions.suppressed(session, ["john@example.com", "soft@example.com", "spam@example.com"])
        assert found == {"john@example.com": "bounce", "spam@example.com": "complaint"}
        rows = {row.address: row for row in suppressions.listing(session)}
    assert rows["john@example.com"].provider == "postmark"
    assert rows["john@example.com"].source_event_id is not None
    assert rows["john@example.com"].source_event_id.startswith("Bounce:883953f4-6105-42a2-a16a-77a8eac79483:")
    assert rows["spam@example.com"].source_event_id == "spam-1"

    # When: the host lifts it, then the address bounces hard again.
    tracking.submit(redis_client, "suppression.delete", {"address": "john@example.com"})
    tracking.settle()
    with tracking.sessions() as session:
        assert suppressions.suppressed(session, ["john@example.com"]) == {}
    tracking.post(redis_client, "postmark", {**POSTMARK_BOUNCE, "BouncedAt": "2019-11-06T08:00:00Z"})
    tracking.settle()

    # Then
    with tracking.sessions() as session:
        assert suppressions.suppressed(session, ["john@example.com"]) == {"john@example.com": "bounce"}
    bounced = of_type(redis_client, "email.bounced")
    # The first two ran side by side, in either order.
    assert sorted((b["recipient"], b["bounce"], b.get("suppressed", False)) for b in bounced) == [
        ("john@example.com", "hard", True),
        ("john@example.com", "hard", True),
        ("soft@example.com", "soft", False),
    ]


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # no .env of the working tree
    monkeypatch.setenv("TASKMASTER_DATABASE_URL", db_url)
    monkeypatch.setenv("TASKMASTER_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TASKMASTER_JOB_MODULES", JOB_MODULES)
    return db_url


def test_cli_lists_suppressions_with_reasons(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`suppressions list` shows each address with its reason; --reason filters; --json for scripts."""
    # Given
    migrate.upgrade(cli_env)
    engine = make_engine(cli_env)
    try:
        with make_sessionmaker(engine).begin() as session:
            suppressions.add(session, "john@example.com", "bounce", provider="postmark")
            suppressions.add(session, "ann@example.com", "manual")
    finally:
        engine.dispose()

    # When / Then
    assert main(["suppressions", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["john@example.com", "bounce", "postmark"],
        ["ann@example.com", "manual", "-"],
    ]
    assert main(["suppressions", "list", "--reason", "manual", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    row = json.loads(line)
    assert row["address"] == "ann@example.com" and row["reason"] == "manual" and row["since"].endswith("Z")


def test_cli_on_a_database_without_the_schema(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    """On a database not upgraded yet the command fails with exit status 1 and says what to run."""
    with pytest.raises(SystemExit) as exit_info:
        main(["suppressions", "list"])

    assert exit_info.value.code == 1
    assert "run `taskmaster-worker db upgrade`" in capsys.readouterr().err
