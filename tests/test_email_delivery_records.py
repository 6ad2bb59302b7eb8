"""Delivery records make each email happen once per recipient: a redelivered job sends nothing, one
that died mid-send sends again under the same Message-ID, a suppressed recipient is skipped, and a
recipient the SMTP server refuses fails alone (for good) or is tried again alone (for now).

Real Dramatiq workers in this process, the test Redis, a migrated SQLite, and the providers' fakes
on loopback; the harness and helpers are those of tests/test_email_failover.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email import message_from_bytes
from email.utils import getaddresses

import dramatiq
import pytest
import redis
from prometheus_client import REGISTRY

from jobs.email.message import stable_message_id
from jobs.email.sender import sender_for
from tests.fakes import addresses_in
from tests.fakes.smtp import FakeSMTP
from tests.helpers import wait_for
from tests.test_email_failover import (
    MailHarness,
    OutagePostmark,
    StartMail,
    harnesses,
    postmark_copies,
    provider_env,
)
from worker.submit import build_message

ADA, BOB, CY = "ada@example.com", "bob@example.com", "cy@example.com"


@pytest.fixture
def smtp() -> Iterator[FakeSMTP]:
    with FakeSMTP() as fake:
        yield fake


@pytest.fixture
def postmark() -> Iterator[OutagePostmark]:
    with OutagePostmark() as fake:
        yield fake


@pytest.fixture
def start_mail(env: dict[str, str], redis_client: redis.Redis) -> Iterator[StartMail]:
    with harnesses(env, redis_client) as start:
        yield start


def smtp_recipients(fake: FakeSMTP) -> list[str]:
    return [rcpt for received in fake.received for rcpt in received.rcpt_tos]


def processed_emails() -> float:
    """email.send jobs that ran to completion in this process."""
    return REGISTRY.get_sample_value("taskmaster_jobs_processed_total", {"type": "email.send"}) or 0.0


def redeliver(h: MailHarness, job_id: str, entry: str, data: dict[str, object]) -> None:
    """Queue the job again as Dramatiq would redeliver it: same id and intake entry, a new message."""
    job_type = h.runtime.registry.get("email.send")
    assert job_type is not None
    _, encoded = build_message(
        job_type,
        data,
        queue="default",
        job_id=job_id,
        entry=entry,
        submitted_ms=int(entry.split("-")[0]),
    )
    h.broker.enqueue(dramatiq.Message.decode(encoded.encode()))


def test_a_redelivered_job_sends_nothing_the_second_time(
    postmark: OutagePostmark,
    start_mail: StartMail,
) -> None:
    """The same job run again after it sent (a redelivery) finds its recipients sent and calls no
    provider, reports nothing more, and counts no new attempt."""
    h = start_mail(provider_env(postmark=postmark, order="postmark"))
    data: dict[str, object] = {"to": [ADA, BOB], "subject": "Once", "text": "Only once."}
    entry = h.submit(h.client, {"type": "email.send", "id": "once", "data": data})
    first = h.event("email.sent", "once")
    h.worker.join()

    processed = processed_emails()
    redeliver(h, "once", entry, data)
    wait_for(lambda: processed_emails() > processed, what="the redelivered job to run")

    assert len(postmark.received) == 1
    assert sorted(c.recipient for c in postmark_copies(postmark)) == [ADA, BOB]
    assert [e["id"] for e in h.events_of("email.sent")] == ["once"] and first["to"] == [ADA, BOB]
    records = h.records()
    assert [(records[("id:once", r)].status, records[("id:once", r)].attempts) for r in (ADA, BOB)] == [
        ("sent", 1),
        ("sent", 1),
    ]


@pytest.mark.parametrize("provider", ["smtp", "postmark"])
def test_a_suppressed_recipient_is_skipped_and_the_others_are_sent(
    smtp: FakeSMTP,
    postmark: OutagePostmark,
    start_mail: StartMail,
    provider: str,
) -> None:
    """A recipient on the suppression list gets email.suppressed and nothing else; the others of the
    same email are sent."""
    h = start_mail(provider_env(smtp=smtp, postmark=postmark, order=provider))
    h.submit(
        h.client, {"type": "suppression.add", "id": "block-bob", "data": {"address": BOB, "reason": "manual"}}
    )
    h.event("suppression.added", "block-bob")

    h.send("mixed", [ADA, BOB, CY])
    suppressed = h.event("email.suppressed", "mixed")
    sent = h.event("email.sent", "mixed")

    assert (suppressed["to"], suppressed["reason"]) == ([BOB], "manual")
    assert sent["to"] == [ADA, CY] and sent["provider"] == provider
    handed = smtp_recipients(smtp) if provider == "smtp" else [c.recipient for c in postmark_copies(postmark)]
    assert sorted(handed) == [ADA, CY]
    records = h.records()
    assert [records[("id:mixed", r)].status for r in (ADA, BOB, CY)] == ["sent", "failed", "sent"]
    assert records[("id:mixed", BOB)].last_error == "suppressed (manual)"


def test_an_smtp_recipient_refused_for_good_fails_alone(smtp: FakeSMTP, start_mail: StartMail) -> None:
    """The SMTP server refusing one RCPT (550) fails that recipient with email.failed and the reply;
    the others of the email are sent."""
    smtp.handler.refuse[BOB] = "550 5.1.1 No such user here"
    h = start_mail(provider_env(smtp=smtp, order="smtp"))

    h.send("partly", [ADA, BOB, CY])
    failed = h.event("email.failed", "partly")
    sent = h.event("email.sent", "partly")

    assert (failed["to"], failed["provider"], failed["error"]) == (
        [BOB],
        "smtp",
        "550 5.1.1 No such user here",
    )
    assert sent["to"] == [ADA, CY]
    assert smtp_recipients(smtp) == [ADA, CY]
    records = h.records()
    assert [records[("id:partly", r)].status for r in (ADA, BOB, CY)] == ["sent", "failed", "sent"]
    assert records[("id:partly", BOB)].last_error == "550 5.1.1 No such user here"


def test_an_smtp_recipient_refused_for_now_is_tried_again(smtp: FakeSMTP, start_mail: StartMail) -> None:
    """A recipient the SMTP server refuses with a 4xx (mailbox busy) stays queued and is sent on a
    retry of the job, alone; the others are not sent twice."""
    smtp.handler.refuse[BOB] = "450 4.2.1 Mailbox busy, try again later"
    h = start_mail(provider_env(smtp=smtp, order="smtp"))

    h.send("later", [ADA, BOB])
    h.event("email.sent", "later")
    smtp.handler.refuse.clear()

    def settled() -> str | None:
        status = h.records()[("id:later", BOB)].status
        return None if status == "queued" else status

    assert wait_for(settled, what="bob's record settled") == "sent"
    assert [r.rcpt_tos for r in smtp.received] == [[ADA], [BOB]]


def test_a_job_that_died_mid_send_sends_again_under_the_same_message_id(
    postmark: OutagePostmark,
    start_mail: StartMail,
) -> None:
    """A record left queued by an attempt that died sends again on redelivery, counting the attempt,
    with the Message-ID of the first, so that a duplicate is recognisable."""
    h = start_mail(provider_env(postmark=postmark, order="postmark"))
    data: dict[str, object] = {"to": [ADA], "subject": "Crash", "text": "Again."}
    # The first attempt recorded its recipient and died before the provider answered.
    sender_for(h.runtime).records.begin("id:crashed", stable_message_id("id:crashed"), [ADA])
    entry = f"{int(time.time() * 1000)}-0"

    redeliver(h, "crashed", entry, data)
    h.event("email.sent", "crashed")

    (copy,) = postmark_copies(postmark)
    assert copy.message_id == stable_message_id("id:crashed")
    record = h.records()[("id:crashed", ADA)]
    assert (record.status, record.attempts, record.provider) == ("sent", 2, "postmark")


@pytest.mark.parametrize("provider", ["smtp", "postmark"])
def test_the_cc_of_a_suppressed_to_recipient_is_sent(
    smtp: FakeSMTP,
    postmark: OutagePostmark,
    start_mail: StartMail,
    provider: str,
) -> None:
    """With its only To recipient suppressed, an email still goes to its Cc recipient."""
    h = start_mail(provider_env(smtp=smtp, postmark=postmark, order=provider))
    h.submit(
        h.client, {"type": "suppression.add", "id": "block-bob", "data": {"address": BOB, "reason": "bounce"}}
    )
    h.event("suppression.added", "block-bob")

    h.send("cc-only", BOB, cc=[ADA])
    h.event("email.suppressed", "cc-only")
    wait_for(lambda: h.events_of("email.sent") or h.events_of("email.failed"), what="the email settled")

    assert not h.events_of("email.failed"), h.events_of("email.failed")
    handed = smtp_recipients(smtp) if provider == "smtp" else [c.recipient for c in postmark_copies(postmark)]
    assert handed == [ADA]


def visible_to_each(smtp: FakeSMTP, postmark: OutagePostmark) -> list[tuple[set[str], set[str]]]:
    """For each message a fake accepted: who it went to, and the addresses its To and Cc show them."""
    seen = []
    for received in smtp.received:
        headers = message_from_bytes(received.content)
        shown = {a for _, a in getaddresses([*headers.get_all("To", []), *headers.get_all("Cc", [])])}
        seen.append((set(received.rcpt_tos), shown))
    for accepted in list(postmark.accepted):
        shown = set(addresses_in(str(accepted.payload.get("To") or "")))
        shown |= set(addresses_in(str(accepted.payload.get("Cc") or "")))
        seen.append((shown | set(addresses_in(str(accepted.payload.get("Bcc") or ""))), shown))
    return seen


@pytest.mark.parametrize("provider", ["smtp", "postmark"])
def test_bcc_recipients_left_alone_do_not_see_each_other(
    smtp: FakeSMTP, postmark: OutagePostmark, start_mail: StartMail, provider: str
) -> None:
    """With its To recipient suppressed, an email still reaches its Bcc recipients, and no copy shows
    one Bcc recipient the address of another."""
    h = start_mail(provider_env(smtp=smtp, postmark=postmark, order=provider))
    h.submit(
        h.client, {"type": "suppression.add", "id": "block-bob", "data": {"address": BOB, "reason": "bounce"}}
    )
    h.event("suppression.added", "block-bob")

    h.send("bcc-only", BOB, bcc=[ADA, CY])
    h.event("email.sent", "bcc-only")
    h.worker.join()

    seen = visible_to_each(smtp, postmark)
    assert set().union(*(recipients for recipients, _ in seen)) == {ADA, CY}
    for recipients, shown in seen:
        for recipient in recipients:
            assert shown & {ADA, CY} <= {recipient}, f"{recipient} is shown {sorted(shown)}"
