"""Provider events: normalised from the providers' documented payloads, recorded once, reported.

The payloads are the providers' own examples: SendGrid's Event Webhook Reference
(twilio.com/docs/sendgrid/for-developers/tracking-events/event), Postmark's webhook pages
(postmarkapp.com/developer/webhooks/bounce-webhook, delivery-webhook, spam-complaint-webhook,
open-tracking-webhook, click-webhook) and Resend's event pages (resend.com/docs/webhooks/emails/
bounced, delivered, clicked, complained). Where an example had to change (distinct event ids,
our message ids), a comment says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from dramatiq import Worker
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from jobs.email.tracking.normalize import normalize
from jobs.email.tracking.record import purge_events
from jobs.email.tracking.suppressions import suppressed
from tests.helpers import events, wait_for
from tests.test_tracking_verify import postmark_headers, resend_headers, sendgrid_headers, tracking_env
from worker.broker import build_broker
from worker.db import migrate
from worker.db.messaging import EmailDelivery
from worker.db.session import make_engine, make_sessionmaker
from worker.db.tracking import ProviderEvent
from worker.intake import Intake
from worker.registry import load_job_modules
from worker.runtime import Runtime
from worker.settings import load_settings

SMTP_ID = "<14c5d75ce93.dfd.64b469@ismtpd-555>"
SG_MESSAGE_ID = "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"
X_MESSAGE_ID = "14c5d75ce93.dfd.64b469"  # what SendGrid's send answer gave us


def sendgrid_event(event: str, event_id: str, **more: Any) -> dict[str, Any]:
    """One event of SendGrid's example array; the example gives every event the id "sg_event_id"."""
    return {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "smtp-id": SMTP_ID,
        "event": event,
        "category": "cat facts",
        "sg_event_id": event_id,
        "sg_message_id": SG_MESSAGE_ID,
        **more,
    }


SENDGRID_EXAMPLE = [
    sendgrid_event("processed", "e-processed"),
    sendgrid_event("deferred", "e-deferred", response="400 try again later", attempt="5"),
    sendgrid_event("delivered", "e-delivered", response="250 OK"),
    sendgrid_event("open", "e-open", useragent="Mozilla/4.0 (compatible; MSIE 6.1)", ip="255.255.255.255"),
    sendgrid_event(
        "click", "e-click", useragent="Mozilla/4.0", ip="255.255.255.255", url="http://www.sendgrid.com/"
    ),
    sendgrid_event("bounce", "e-bounce", reason="500 unknown recipient", status="5.0.0", type="bounce"),
    # The reference documents `type: blocked` for a block (a temporary failure).
    sendgrid_event("bounce", "e-blocked", reason="550 5.7.1 blocked", status="5.7.1", type="blocked"),
    sendgrid_event("dropped", "e-dropped", reason="Bounced Address", status="5.0.0"),
    sendgrid_event("spamreport", "e-spamreport"),
    sendgrid_event("unsubscribe", "e-unsubscribe"),
    sendgrid_event(
        "group_unsubscribe", "e-group-unsubscribe", asm_group_id=10, url="http://www.sendgrid.com/"
    ),
    sendgrid_event("group_resubscribe", "e-group-resubscribe", asm_group_id=10),
]

POSTMARK_BOUNCE = {
    "RecordType": "Bounce",
    "MessageStream": "outbound",
    "ID": 4323372036854775807,
    "Type": "HardBounce",
    "TypeCode": 1,
    "Name": "Hard bounce",
    "Tag": "Test",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Metadata": {"a_key": "a_value", "b_key": "b_value"},
    "ServerID": 23,
    "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
    "Details": "Test bounce details",
    "Email": "john@example.com",
    "From": "sender@example.com",
    "BouncedAt": "2019-11-05T16:33:54.9070259Z",
    "DumpAvailable": True,
    "Inactive": True,
    "CanActivate": True,
    "Subject": "Test subject",
    "Content": "<Full dump of bounce>",
}
POSTMARK_DELIVERY = {
    "RecordType": "Delivery",
    "ServerID": 23,
    "MessageStream": "outbound",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Recipient": "john@example.com",
    "Tag": "welcome-email",
    "DeliveredAt": "2019-11-05T16:33:54.9070259Z",
    "Details": "Test delivery webhook details",
    "Metadata": {"a_key": "a_value", "b_key": "b_value"},
}
POSTMARK_SPAM_COMPLAINT = {
    **{k: v for k, v in POSTMARK_BOUNCE.items() if k != "Content"},
    "RecordType": "SpamComplaint",
    "ID": 42,
    "Type": "SpamComplaint",
    "TypeCode": 512,
    "Name": "Spam complaint",
    "Description": "The subscriber explicitly marked this message as spam.",
    "Details": "Test spam complaint details",
    "CanActivate": False,
}
POSTMARK_OPEN = {
    "RecordType": "Open",
    "MessageStream": "outbound",
    "Metadata": {"example": "value"},
    "FirstOpen": True,
    "Recipient": "john@example.com",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "ReceivedAt": "2019-11-05T16:33:54.9070259Z",
    "Platform": "WebMail",
    "ReadSeconds": 5,
    "Tag": "welcome-email",
    "UserAgent": "Mozilla/5.0 (Windows NT 6.1; WOW64)",
    "OS": {"Name": "OS X 10.7 Lion", "Family": "OS X 10", "Company": "Apple Computer, Inc."},
    "Client": {"Name": "Chrome 35.0.1916.153", "Family": "Chrome", "Company": "Google"},
    "Geo": {"CountryISOCode": "RS", "Country": "Serbia", "City": "Novi Sad"},
}
POSTMARK_CLICK = {
    **{k: v for k, v in POSTMARK_OPEN.items() if k not in ("FirstOpen", "ReadSeconds")},
    "RecordType": "Click",
    "Platform": "Desktop",
    "ClickLocation": "HTML",
    "OriginalLink": "https://example.com",
}


def resend_event(kind: str, to: list[str] | None = None, **data: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "created_at": "2024-11-22T23:41:12.126Z",
        "data": {
            "broadcast_id": "8b146471-e88e-4322-86af-016cd36fd216",
            "created_at": "2024-11-22T23:41:11.894719+00:00",
            "email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
            "from": "Acme <onboarding@resend.dev>",
            "to": to or ["delivered@resend.dev"],
            "subject": "Sending this example",
            "tags": {"category": "confirm_email"},
            **data,
        },
    }


RESEND_BOUNCE = resend_event(
    "email.bounced",
    bounce={
        "message": "The recipient's email address is on the suppression list because it has a recent"
        " history of producing hard bounces.",
        "subType": "Suppressed",
        "type": "Permanent",
    },
)
RESEND_CLICK = resend_event(
    "email.clicked",
    click={
        "ipAddress": "122.115.53.11",
        "link": "https://resend.com",
        "timestamp": "2024-11-24T05:00:57.163Z",
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)",
    },
)


# Normalisation, without Redis or SQL.


def test_sendgrid_example_normalises_to_the_seven_kinds() -> None:
    """Each SendGrid event maps to its kind; processed and unsubscribes are left out."""
    found = normalize("sendgrid", {}, json.dumps(SENDGRID_EXAMPLE))

    assert [(e.event_id, e.kind, e.bounce, e.suppression) for e in found] == [
        ("e-deferred", "deferred", None, None),
        ("e-delivered", "delivered", None, None),
        ("e-open", "opened", None, None),
        ("e-click", "clicked", None, None),
        ("e-bounce", "bounced", "hard", "bounce"),
        ("e-blocked", "bounced", "soft", None),
        ("e-dropped", "dropped", None, None),
        ("e-spamreport", "complained", None, "complaint"),
    ]
    delivered = found[1]
    assert delivered.recipient == "example@test.com" and delivered.provider_message_id == SG_MESSAGE_ID
    assert delivered.occurred_at == datetime(2017, 12, 15, 0, 59, 29, tzinfo=UTC)
    assert delivered.detail == "250 OK" and found[3].url == "http://www.sendgrid.com/"
    assert found[6].detail == "Bounced Address"


def test_postmark_examples_normalise() -> None:
    """Postmark's records map by RecordType and bounce Type; the key is type, message, time, recipient."""
    cases = [
        (POSTMARK_DELIVERY, "delivered", None, None),
        (POSTMARK_BOUNCE, "bounced", "hard", "bounce"),
        ({**POSTMARK_BOUNCE, "Type": "SoftBounce", "TypeCode": 4096}, "bounced", "soft", None),
        ({**POSTMARK_BOUNCE, "Type": "Transient", "TypeCode": 2}, "deferred", None, None),
        (POSTMARK_SPAM_COMPLAINT, "complained", None, "complaint"),
        (POSTMARK_OPEN, "opened", None, None),
        (POSTMARK_CLICK, "clicked", None, None),
    ]
    for record, kind, bounce, suppression in cases:
        (event,) = normalize("postmark", {}, json.dumps(record))
        assert (event.kind, event.bounce, event.suppression) == (kind, bounce, suppression), record[
            "RecordType"
        ]
        assert event.recipient == "john@example.com"
        assert event.provider_message_id == "883953f4-6105-42a2-a16a-77a8eac79483"
    (delivery,) = normalize("postmark", {}, json.dumps(POSTMARK_DELIVERY))
    assert delivery.event_id == (
        "Delivery:883953f4-6105-42a2-a16a-77a8eac79483:2019-11-05T16:33:54.9070259Z:john@example.com"
    )
    assert delivery.occurred_at == datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC)
    (click,) = normalize("postmark", {}, json.dumps(POSTMARK_CLICK))
    assert click.url == "https://example.com"
    later_open = {**POSTMARK_OPEN, "ReceivedAt": "2019-11-05T17:00:00Z"}
    assert normalize("postmark", {}, json.dumps(later_open))[0].event_id != click.event_id
    assert normalize("postmark", {}, json.dumps({"RecordType": "SubscriptionChange", "MessageID": "x"})) == []


def test_resend_examples_normalise() -> None:
    """Resend's types map to kinds, the event id is svix-id; with several recipients none is suppressed."""
    headers = {"svix-id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"}
    (bounce,) = normalize("resend", headers, json.dumps(RESEND_BOUNCE))
    assert (bounce.kind, bounce.bounce, bounce.suppression) == ("bounced", "hard", "bounce")
    assert bounce.event_id == "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
    assert bounce.provider_message_id == "56761188-7520-42d8-8898-ff6fc54ce618"
    assert bounce.detail is not None and bounce.detail.startswith("The recipient's email address")
    (click,) = normalize("resend", headers, json.dumps(RESEND_CLICK))
    assert click.url == "https://resend.com" and click.occurred_at == datetime(
        2024, 11, 24, 5, 0, 57, 163000, UTC
    )
    transient = resend_event("email.bounced", bounce={"message": "mailbox full", "type": "Transient"})
    assert normalize("resend", headers, json.dumps(transient))[0].bounce == "soft"
    delayed = normalize("resend", headers, json.dumps(resend_event("email.delivery_delayed")))
    assert [e.kind for e in delayed] == ["deferred"]
    two = normalize(
        "resend", headers, json.dumps(resend_event("email.complained", to=["a@x.org", "b@x.org"]))
    )
    assert [(e.recipient, e.kind, e.suppression) for e in two] == [
        ("a@x.org", "complained", None),
        ("b@x.org", "complained", None),
    ]
    assert normalize("resend", headers, json.dumps(resend_event("email.sent"))) == []


# Recorded through the intake and a real Dramatiq worker, on SQLite and PostgreSQL.


class Tracking:
    """The intake and a Dramatiq worker in this process, on the test Redis and ``db_url``."""

    def __init__(self, env: dict[str, str], db_url: str) -> None:
        settings = load_settings(
            {
                **tracking_env(env),
                "TASKMASTER_DATABASE_URL": db_url,
                "TASKMASTER_JOB_MIN_BACKOFF": "0.05",
                "TASKMASTER_JOB_MAX_RETRIES": "2",
            }
        )
        self.runtime = Runtime(settings, load_job_modules(settings.job_modules))
        self.intake = Intake(self.runtime, "test")
        self.intake.ensure_group()
        self.broker = build_broker(self.runtime)
        self.worker = Worker(self.broker, worker_threads=2, worker_timeout=50)
        self.sessions: sessionmaker[Session] = make_sessionmaker(self.runtime.db)

    def submit(
        self, client: redis.Redis, job_type: str, data: dict[str, Any], job_id: str | None = None
    ) -> str:
        job: dict[str, Any] = {"type": job_type, "data": data}
        if job_id is not None:
            job["id"] = job_id
        entry = client.xadd("taskmaster:intake", {"job": json.dumps(job)}).decode()
        self.intake.poll_once(block_ms=10)
        return entry

    def post(
        self, client: redis.Redis, provider: str, body: Any, headers: dict[str, str] | None = None
    ) -> str:
        """Forward a webhook as the host would: the provider's headers and the raw body."""
        text = body if isinstance(body, str) else json.dumps(body)
        if headers is None:
            signers = {"sendgrid": sendgrid_headers, "resend": resend_headers}
            headers = signers[provider](text) if provider in signers else postmark_headers()
        return self.submit(client, "provider.event", {"provider": provider, "headers": headers, "body": text})

    def settle(self) -> None:
        """Wait until every job submitted so far has run."""
        self.broker.join("default", timeout=15_000)
        self.worker.join()

    def delivery(self, **values: Any) -> EmailDelivery:
        row = EmailDelivery(
            status="sent", message_id=f"<{values['idempotency_key']}@taskmaster-worker>", **values
        )
        with self.sessions.begin() as session:
            session.add(row)
        return row

    def reload(self, row: EmailDelivery) -> EmailDelivery:
        with self.sessions() as session:
            return session.get_one(EmailDelivery, row.id)

    def close(self) -> None:
        self.worker.stop(timeout=5000)
        self.broker.close()
        self.runtime.close()


@pytest.fixture
def tracking(env: dict[str, str], db_url: str) -> Iterator[Tracking]:
    migrate.upgrade(db_url)
    harness = Tracking(env, db_url)
    harness.worker.start()
    yield harness
    harness.close()


def of_type(client: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    return [e for e in events(client) if e["type"].startswith(prefix)]


def test_sendgrid_batch_updates_deliveries_and_reports_each_event(
    tracking: Tracking, redis_client: redis.Redis
) -> None:
    """Given two sent emails, when SendGrid posts their events, each is reported with recipient,
    provider ids and the job's identity, and the delivery records move on."""
    # Given: one found by the X-Message-Id prefix of sg_message_id, one by our custom arg.
    first = tracking.delivery(
        idempotency_key="id:welcome-1",
        recipient="a@example.com",
        provider="sendgrid",
        provider_message_id=X_MESSAGE_ID,
    )
    second = tracking.delivery(
        idempotency_key="id:welcome-2",
        recipient="b@example.com",
        provider="sendgrid",
        provider_message_id="other",
    )
    body = [
        sendgrid_event("processed", "p1", email="a@example.com"),
        sendgrid_event("delivered", "d1", email="a@example.com", response="250 OK"),
        sendgrid_event("open", "o1", email="a@example.com"),
        sendgrid_event(
            "bounce",
            "b1",
            email="B@example.com",
            reason="500 unknown recipient",
            type="bounce",
            sg_message_id="unrelated.filter0001.0",
            taskmaster_delivery="id:welcome-2",
        ),
    ]

    # When
    entry = tracking.submit(
        redis_client,
        "provider.event",
        {"provider": "sendgrid", "headers": sendgrid_headers(json.dumps(body)), "body": json.dumps(body)},
        job_id="hook-1",
    )

    # Then
    reported = wait_for(lambda: len(of_type(redis_client, "email.")) >= 3 and of_type(redis_client, "email."))
    tracking.settle()  # the events are out before the transaction commits
    assert [e["type"] for e in reported] == ["email.delivered", "email.opened", "email.bounced"]
    delivered, opened, bounced = (e["data"] for e in reported)
    assert delivered["recipient"] == "a@example.com" and delivered["provider"] == "sendgrid"
    assert delivered["provider_message_id"] == SG_MESSAGE_ID and delivered["provider_event_id"] == "d1"
    assert delivered["message_id"] == first.message_id and delivered["id"] == "hook-1"
    assert delivered["entry"] == entry and delivered["job_type"] == "provider.event"
    assert opened["message_id"] == first.message_id
    assert bounced["bounce"] == "hard" and bounced["suppressed"] is True
    assert bounced["message_id"] == second.message_id and bounced["reason"] == "500 unknown recipient"
    first_now, second_now = tracking.reload(first), tracking.reload(second)
    assert first_now.status == "delivered"
    assert first_now.delivered_at == datetime(2017, 12, 15, 0, 59, 29, tzinfo=UTC)
    assert second_now.status == "bounced" and second_now.last_error == "hard bounce: 500 unknown recipient"
    with tracking.sessions() as session:
        assert suppressed(session, ["b@EXAMPLE.com", "a@example.com"]) == {"b@EXAMPLE.com": "bounce"}


def test_the_same_event_twice_is_reported_once(tracking: Tracking, redis_client: redis.Redis) -> None:
    """Re-delivered webhooks (same svix-id; same sg_event_id beside a new one) change nothing more."""
    # Given: Resend posts one event twice (a retry is signed anew, with the same svix-id).
    delivered = resend_event("email.delivered")
    text = json.dumps(delivered)
    tracking.post(redis_client, "resend", text, resend_headers(text, message_id="msg_retry_1"))
    tracking.post(redis_client, "resend", text, resend_headers(text, message_id="msg_retry_1"))
    # Given: SendGrid re-posts an event it already posted, beside a new one.
    tracking.post(redis_client, "sendgrid", [sendgrid_event("delivered", "sg-1")])
    tracking.post(
        redis_client, "sendgrid", [sendgrid_event("delivered", "sg-1"), sendgrid_event("open", "sg-2")]
    )

    # When
    tracking.settle()

    # Then
    reported = [
        (e["data"]["provider"], e["type"], e["data"]["provider_event_id"])
        for e in of_type(redis_client, "email.")
    ]
    assert sorted(reported) == [
        ("resend", "email.delivered", "msg_retry_1"),
        ("sendgrid", "email.delivered", "sg-1"),
        ("sendgrid", "email.opened", "sg-2"),
    ]
    with tracking.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ProviderEvent)) == 3
    assert not of_type(redis_client, "job.dead")


def test_postmark_and_resend_events_find_their_deliveries(
    tracking: Tracking, redis_client: redis.Redis
) -> None:
    """Postmark's MessageID, Postmark's Metadata and Resend's email_id find the delivery; an event
    of an unknown message is still reported."""
    # Given
    postmark = tracking.delivery(
        idempotency_key="id:pm-1",
        recipient="john@example.com",
        provider="postmark",
        provider_message_id="883953f4-6105-42a2-a16a-77a8eac79483",
    )
    resend = tracking.delivery(
        idempotency_key="id:rs-1",
        recipient="delivered@resend.dev",
        provider="resend",
        provider_message_id="56761188-7520-42d8-8898-ff6fc54ce618",
    )
    # No provider message id recorded (the send's answer was lost): found by the Metadata we sent.
    unanswered = tracking.delivery(
        idempotency_key="id:pm-2", recipient="ann@example.com", provider="postmark"
    )
    opened = {
        **POSTMARK_OPEN,
        "MessageID": "other",
        "Recipient": "Ann@example.com",
        "Metadata": {"delivery_id": "id:pm-2"},
    }

    # When
    tracking.post(redis_client, "postmark", POSTMARK_DELIVERY)
    tracking.post(redis_client, "postmark", POSTMARK_CLICK)
    tracking.post(redis_client, "resend", resend_event("email.complained"))
    tracking.post(
        redis_client, "postmark", {**POSTMARK_DELIVERY, "MessageID": "unknown", "Recipient": "x@y.org"}
    )
    tracking.post(redis_client, "postmark", opened)
    tracking.settle()

    # Then
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in of_type(redis_client, "email."):
        by_type.setdefault(event["type"], []).append(event["data"])
    known, unknown = sorted(by_type["email.delivered"], key=lambda d: d["recipient"])
    assert known["message_id"] == postmark.message_id and "message_id" not in unknown
    assert by_type["email.clicked"][0]["url"] == "https://example.com"
    (opened_event,) = by_type["email.opened"]
    assert (
        opened_event["message_id"] == unanswered.message_id and opened_event["recipient"] == "Ann@example.com"
    )
    (complaint,) = by_type["email.complained"]
    assert complaint["message_id"] == resend.message_id and complaint["suppressed"] is True
    assert tracking.reload(postmark).status == "delivered"
    assert tracking.reload(resend).status == "complained"
    with tracking.sessions() as session:
        assert suppressed(session, ["delivered@resend.dev"]) == {"delivered@resend.dev": "complaint"}


def test_old_provider_events_are_purged(db_url: str) -> None:
    """Events received before the cut are forgotten, later ones kept for dedupe."""
    migrate.upgrade(db_url)
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)
    try:
        with sessions.begin() as session:
            for n, age_days in enumerate((100, 91, 89, 0)):
                received = now - timedelta(days=age_days)
                session.add(
                    ProviderEvent(
                        provider="sendgrid", provider_event_id=f"e{n}", type="opened", received_at=received
                    )
                )
        with sessions.begin() as session:
            assert purge_events(session, now - timedelta(days=90)) == 2
        with sessions() as session:
            assert sorted(session.scalars(select(ProviderEvent.provider_event_id))) == ["e2", "e3"]
    finally:
        engine.dispose()
