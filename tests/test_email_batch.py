"""email.send_batch through the providers' batch endpoints: real Dramatiq workers in this process,
the test Redis, a migrated SQLite, and the providers' fakes on loopback (tests/fakes/, each module
documenting what it reproduces); the harness and helpers are those of tests/test_email_failover.py.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.email.message import stable_message_id
from jobs.email.records import Attempt, DeliveryRecords, Outcome
from tests.fakes.http import Reply, Request
from tests.fakes.postmark import FakePostmark
from tests.fakes.resend import FakeResend
from tests.helpers import wait_for
from tests.test_email_failover import (
    MailHarness,
    OutagePostmark,
    StartMail,
    postmark,  # noqa: F401 - fixture
    postmark_copies,
    provider_env,
    resend_copies,
    start_mail,  # noqa: F401 - fixture
)
from worker.db import migrate
from worker.db.messaging import EmailDelivery
from worker.db.session import make_engine
from worker.submit import enqueue

BATCH_PATH = "/email/batch"


def emails(prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "key": f"{prefix}-{n}",
            "to": f"{prefix}-{n}@example.com",
            "subject": "Digest",
            "text": f"Digest {n}",
        }
        for n in range(count)
    ]


def send_batch(h: MailHarness, job_id: str, batch: list[dict[str, Any]]) -> None:
    """Enqueue email.send_batch as the notifications capability would (it is internal)."""
    job_type = h.runtime.registry.get("email.send_batch")
    assert job_type is not None
    outcome = enqueue(
        h.client,
        h.runtime.keys,
        job_type,
        {"emails": batch},
        idempotency_key=f"batch:{job_id}",
        idempotency_ttl_s=60,
        job_id=job_id,
    )
    assert outcome == "enqueued"


def outcomes(h: MailHarness, kind: str) -> dict[str, dict[str, Any]]:
    """The ``kind`` events of batch emails, by email key."""
    return {e["key"]: e for e in h.events_of(kind) if "key" in e}


def settled(h: MailHarness, count: int) -> bool:
    return len(outcomes(h, "email.sent")) + len(outcomes(h, "email.failed")) >= count


def processed_batches() -> float:
    """email.send_batch jobs that ran to completion in this process."""
    value = REGISTRY.get_sample_value("taskmaster_jobs_processed_total", {"type": "email.send_batch"})
    return value or 0.0


class FlakyPostmark(FakePostmark):
    """Postmark answering its documented outage (503, ErrorCode 100) to the requests numbered in
    ``failing`` (1 is the first), and normally to the others."""

    def __init__(self, failing: set[int]) -> None:
        super().__init__()
        self.failing = failing
        self._count = 0
        self._count_lock = threading.Lock()

    def handle(self, request: Request) -> Reply:
        with self._count_lock:
            self._count += 1
            number = self._count
        if number in self.failing:
            return FakePostmark.server_error(503)
        return super().handle(request)


@pytest.fixture
def resend() -> Iterator[FakeResend]:
    with FakeResend() as fake:
        yield fake


def batch_sizes(fake: FakePostmark) -> list[int]:
    return [len(r.json()) for r in fake.received if r.path == BATCH_PATH]


def test_1200_emails_go_in_three_requests_each_once(
    postmark: OutagePostmark,  # noqa: F811
    start_mail: StartMail,  # noqa: F811
) -> None:
    """1,200 emails reach Postmark's batch endpoint in 3 requests (500, 500, 200), each email once,
    each recipient recorded sent with Postmark's id, and one email.sent per email."""
    h = start_mail(provider_env(postmark=postmark, order="postmark"))
    batch_one, batch_two = emails("a", 1000), emails("b", 200)

    send_batch(h, "digest-a", batch_one)
    send_batch(h, "digest-b", batch_two)
    wait_for(lambda: settled(h, 1200), timeout_s=30, what="1,200 emails settled")
    h.worker.join()

    assert sorted(batch_sizes(postmark)) == [200, 500, 500]
    copies = postmark_copies(postmark)
    assert Counter((c.message_id, c.recipient) for c in copies) == {
        (stable_message_id(e["key"]), e["to"]): 1 for e in batch_one + batch_two
    }
    records = h.records()
    by_recipient = {c.recipient: c.provider_message_id for c in copies}
    assert len(records) == 1200
    assert all(
        (r.status, r.provider, r.provider_message_id) == ("sent", "postmark", by_recipient[r.recipient])
        for r in records.values()
    )
    sent = outcomes(h, "email.sent")
    assert len(sent) == 1200 and not outcomes(h, "email.failed")
    assert sent["b-7"]["to"] == ["b-7@example.com"] and sent["b-7"]["id"] == "digest-b"


def test_a_rejected_email_fails_alone(
    postmark: OutagePostmark,  # noqa: F811
    resend: FakeResend,
    start_mail: StartMail,  # noqa: F811
) -> None:
    """An inactive recipient (Postmark ErrorCode 406 in a 200 batch answer) fails that email with
    the reason; the others of the batch are sent, and the next provider is never asked."""
    h = start_mail(provider_env(postmark=postmark, resend=resend, order="postmark,resend"))
    batch = emails("r", 5)
    postmark.inactive.add("r-2@example.com")

    send_batch(h, "rejected", batch)
    wait_for(lambda: settled(h, 5), what="5 emails settled")
    h.worker.join()

    failed = outcomes(h, "email.failed")
    assert list(failed) == ["r-2"] and "inactive" in failed["r-2"]["error"]
    assert failed["r-2"]["provider"] == "postmark"
    assert sorted(outcomes(h, "email.sent")) == ["r-0", "r-1", "r-3", "r-4"]
    record = h.records()[("r-2", "r-2@example.com")]
    assert record.status == "failed" and "inactive" in (record.last_error or "")
    assert batch_sizes(postmark) == [5] and resend.received == []


def test_with_the_first_provider_down_the_batch_goes_to_the_second(
    postmark: OutagePostmark,  # noqa: F811
    resend: FakeResend,
    start_mail: StartMail,  # noqa: F811
) -> None:
    """Postmark answering 503 to its first request passes the whole batch to Resend (in its own
    batches of 100); Postmark is asked once, not once per chunk."""
    h = start_mail(provider_env(postmark=postmark, resend=resend, order="postmark,resend"))
    postmark.down = True
    batch = emails("d", 600)

    send_batch(h, "down", batch)
    wait_for(lambda: settled(h, 600), timeout_s=20, what="600 emails settled")
    h.worker.join()

    assert len(postmark.received) == 1 and postmark.accepted == []
    assert [len(r.json()) for r in resend.received] == [100] * 6
    assert Counter((c.message_id, c.recipient) for c in resend_copies(resend)) == {
        (stable_message_id(e["key"]), e["to"]): 1 for e in batch
    }
    assert {e["provider"] for e in outcomes(h, "email.sent").values()} == {"resend"}
    assert all(r.provider == "resend" and r.status == "sent" for r in h.records().values())


def test_a_retried_job_sends_only_what_is_still_queued(start_mail: StartMail) -> None:  # noqa: F811
    """Postmark failing the second request of a batch leaves those emails queued; the retry sends
    them alone, and a redelivery of the finished job sends nothing: every email went once."""
    with FlakyPostmark(failing={2}) as flaky:
        h = start_mail(provider_env(postmark=flaky, order="postmark"))
        batch = emails("t", 700)

        send_batch(h, "retried", batch)
        wait_for(lambda: settled(h, 700), timeout_s=20, what="700 emails settled")
        h.worker.join()
        # The same job again, as a redelivery after a crash would run it.
        processed = processed_batches()
        send_batch(h, "retried-again", batch)
        wait_for(lambda: processed_batches() > processed, what="the redelivered job to run")
        h.worker.join()

        assert batch_sizes(flaky) == [500, 200, 200]
        assert Counter((c.message_id, c.recipient) for c in postmark_copies(flaky)) == {
            (stable_message_id(e["key"]), e["to"]): 1 for e in batch
        }
        records = h.records()
        attempts = Counter(r.attempts for r in records.values())
        assert all(r.status == "sent" for r in records.values()) and attempts == {1: 500, 2: 200}
        assert len(h.events_of("email.sent")) == 700


def test_suppressed_recipients_are_skipped(
    postmark: OutagePostmark,  # noqa: F811
    start_mail: StartMail,  # noqa: F811
) -> None:
    """A suppressed recipient gets email.suppressed and a failed record, and is in no request; the
    other recipients, of the same email and of the others, are sent."""
    h = start_mail(provider_env(postmark=postmark, order="postmark"))
    h.submit(
        h.client,
        {
            "type": "suppression.add",
            "id": "block",
            "data": {"address": "s-1@example.com", "reason": "manual"},
        },
    )
    h.event("suppression.added", "block")
    batch = emails("s", 3)
    batch[2]["cc"] = ["s-1@example.com"]

    send_batch(h, "suppressed", batch)
    wait_for(lambda: len(outcomes(h, "email.sent")) == 2, what="2 emails sent")
    h.worker.join()

    suppressed = [e for e in h.events_of("email.suppressed") if "key" in e]
    assert sorted((e["key"], e["to"][0], e["reason"]) for e in suppressed) == [
        ("s-1", "s-1@example.com", "manual"),
        ("s-2", "s-1@example.com", "manual"),
    ]
    assert sorted(c.recipient for c in postmark_copies(postmark)) == ["s-0@example.com", "s-2@example.com"]
    assert outcomes(h, "email.sent")["s-2"]["to"] == ["s-2@example.com"]
    record = h.records()[("s-1", "s-1@example.com")]
    assert record.status == "failed" and record.last_error == "suppressed (manual)"


def test_bcc_recipients_left_alone_get_a_copy_each(
    postmark: OutagePostmark,  # noqa: F811
    start_mail: StartMail,  # noqa: F811
) -> None:
    """When the To recipient of an email is suppressed, its Bcc recipients are each sent a copy of
    their own, as email.send does: none of them sees the other."""
    h = start_mail(provider_env(postmark=postmark, order="postmark"))
    h.submit(
        h.client,
        {
            "type": "suppression.add",
            "id": "block",
            "data": {"address": "b-to@example.com", "reason": "manual"},
        },
    )
    h.event("suppression.added", "block")
    batch = [
        {
            "key": "b-0",
            "to": "b-to@example.com",
            "bcc": ["b-x@example.com", "b-y@example.com"],
            "subject": "Digest",
            "text": "Digest",
        }
    ]

    send_batch(h, "bcc-only", batch)
    wait_for(lambda: len(h.events_of("email.sent")) == 2, what="both copies sent")
    h.worker.join()

    payloads = [a.payload for a in postmark.accepted]
    assert sorted((p["To"], p.get("Bcc")) for p in payloads) == [
        ("b-x@example.com", None),
        ("b-y@example.com", None),
    ]
    records = h.records()
    assert records[("b-0", "b-x@example.com")].status == "sent"
    assert records[("b-0", "b-y@example.com")].status == "sent"
    assert records[("b-0", "b-to@example.com")].status == "failed"


def test_batched_records_begin_and_finish_many_emails(db_url: str) -> None:
    """begin_many records every recipient in one transaction and returns only those still queued;
    finish_many settles each row once, so a second attempt sees only what is left."""
    # Given a migrated database and two emails, one with two recipients
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    records = DeliveryRecords(engine)
    attempts = [
        Attempt("k1", "<m1@x>", ["a@example.com", "b@example.com"]),
        Attempt("k2", "<m2@x>", ["c@example.com"]),
    ]
    try:
        # When the first attempt sends k1 to a, fails b, and leaves k2 queued
        first = records.begin_many(attempts)
        records.finish_many(
            [
                Outcome("k1", "a@example.com", "sent", provider="postmark", provider_message_id="pm-1"),
                Outcome("k1", "b@example.com", "failed", provider="postmark", error="406 inactive"),
            ]
        )
        second = records.begin_many(attempts)
        with Session(engine) as session:
            rows = {(r.idempotency_key, r.recipient): r for r in session.scalars(select(EmailDelivery))}
            summary = {
                k: (r.status, r.provider, r.provider_message_id, r.last_error, r.attempts)
                for k, r in rows.items()
            }
            sent_at = rows[("k1", "a@example.com")].sent_at
    finally:
        engine.dispose()
    # Then only the queued recipient comes back, with its attempt counted
    assert first == [(["a@example.com", "b@example.com"], {}), (["c@example.com"], {})]
    assert second == [([], {}), (["c@example.com"], {})]
    assert summary == {
        ("k1", "a@example.com"): ("sent", "postmark", "pm-1", None, 1),
        ("k1", "b@example.com"): ("failed", "postmark", None, "406 inactive", 1),
        ("k2", "c@example.com"): ("queued", None, None, None, 2),
    }
    assert sent_at is not None


def test_templates_are_rendered_per_email_and_a_render_error_fails_only_its_email(
    postmark: OutagePostmark,  # noqa: F811
    start_mail: StartMail,  # noqa: F811
) -> None:
    """Each email gets its template rendered with its own variables; one missing a variable fails
    alone with the reason, and is never sent."""
    h = start_mail(provider_env(postmark=postmark, order="postmark"))
    upsert = {"name": "digest", "subject": "{{ n }} tasks", "text": "You have {{ n }} tasks."}
    h.submit(h.client, {"type": "template.upsert", "id": "tpl", "data": upsert})
    h.event("template.upserted", "tpl")
    batch = [
        {"key": f"t{n}", "to": f"t{n}@example.com", "template": "digest", "variables": {"n": n}}
        for n in (1, 2)
    ] + [{"key": "t3", "to": "t3@example.com", "template": "digest", "variables": {}}]

    send_batch(h, "templated", batch)
    wait_for(lambda: settled(h, 3), what="3 emails settled")
    h.worker.join()

    bodies = {
        a.payload["To"]: (a.payload["Subject"], a.payload["TextBody"].strip()) for a in postmark.accepted
    }
    assert bodies == {
        "t1@example.com": ("1 tasks", "You have 1 tasks."),
        "t2@example.com": ("2 tasks", "You have 2 tasks."),
    }
    sent = outcomes(h, "email.sent")
    assert (sent["t1"]["template"], sent["t1"]["template_version"]) == ("digest", 1)
    failed = outcomes(h, "email.failed")
    assert list(failed) == ["t3"] and "n" in failed["t3"]["error"]
    assert h.records()[("t3", "t3@example.com")].status == "failed"
