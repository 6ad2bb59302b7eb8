"""email.send through the failover chain, end to end: real Dramatiq workers in this process, the
test Redis, a migrated SQLite, and the providers' fakes on loopback (tests/fakes/).

What each fake reproduces is documented in its own module; the subclasses here only decide when a
provider is down (503, as SendGrid's and Postmark's error pages list for an outage) or answers late.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import pytest
import redis
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.email.message import stable_message_id
from jobs.email.sender import _senders
from tests.fakes import addresses_in
from tests.fakes.http import FakeHTTPServer, Reply, Request
from tests.fakes.postmark import FakePostmark
from tests.fakes.resend import FakeResend
from tests.fakes.sendgrid import FakeSendGrid, errors
from tests.fakes.smtp import FakeSMTP
from tests.helpers import events, wait_for
from tests.test_worker_inprocess import Harness
from worker.breaker import CircuitBreaker, breaker_states
from worker.breaker import RedisBackend as BreakerBackend
from worker.db.messaging import EmailDelivery
from worker.ratelimit import RateLimiter, Rule
from worker.ratelimit import RedisBackend as LimiterBackend
from worker.settings import Settings, load_settings

SENDER = "TaskMaster Pro <notifications@mail.taskmaster-pro.com>"
THRESHOLD = 3
# Settings every test here shares: providers never throttle, failures open a breaker quickly.
BASE_ENV = {
    "TASKMASTER_EMAIL_FROM": SENDER,
    "TASKMASTER_BREAKER_FAILURE_THRESHOLD": str(THRESHOLD),
    "TASKMASTER_BREAKER_WINDOW": "30",
    "TASKMASTER_BREAKER_COOLDOWN": "2",
    "TASKMASTER_SENDGRID_RATE_PER_S": "10000",
    "TASKMASTER_POSTMARK_RATE_PER_S": "10000",
    "TASKMASTER_RESEND_RATE_PER_S": "10000",
    "TASKMASTER_SMTP_RATE_PER_S": "10000",
    "TASKMASTER_JOB_MIN_BACKOFF": "0.05",
    "TASKMASTER_JOB_MAX_BACKOFF": "0.3",
}


# ---------------------------------------------------------------------------- fakes that fail


class Outage(FakeHTTPServer):
    """A provider fake that answers its documented outage error while ``down`` is set."""

    down = False

    def outage(self) -> Reply:
        raise NotImplementedError

    def handle(self, request: Request) -> Reply:
        if self.down:
            return self.outage()
        return super().handle(request)


class OutageSendGrid(Outage, FakeSendGrid):
    def outage(self) -> Reply:
        return FakeSendGrid.server_error(503)


class OutagePostmark(Outage, FakePostmark):
    def outage(self) -> Reply:
        return FakePostmark.server_error(503)  # ErrorCode 100, maintenance


class LateResend(FakeResend):
    """Resend that takes the first email, then answers it only after the client gave up."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self._answered = 0
        self._answered_lock = threading.Lock()

    def handle(self, request: Request) -> Reply:
        reply = super().handle(request)
        with self._answered_lock:
            self._answered += 1
            late = self._answered == 1
        if late:
            self.release.wait(10)
        return reply

    def stop(self) -> None:
        self.release.set()
        super().stop()


# ---------------------------------------------------------------------------- what reached a fake


class Copy(NamedTuple):
    """One recipient of one email as a provider accepted it."""

    provider: str
    message_id: str  # our Message-ID header
    recipient: str
    provider_message_id: str


def sendgrid_copies(fake: FakeSendGrid) -> list[Copy]:
    copies = []
    for accepted in list(fake.accepted):
        message_id = accepted.payload.get("headers", {}).get("Message-ID", "")
        for personalization in accepted.payload["personalizations"]:
            for kind in ("to", "cc", "bcc"):
                for address in personalization.get(kind) or []:
                    copies.append(Copy("sendgrid", message_id, address["email"], accepted.message_id))
    return copies


def postmark_copies(fake: FakePostmark) -> list[Copy]:
    copies = []
    for accepted in list(fake.accepted):
        headers = {h["Name"]: h["Value"] for h in accepted.payload.get("Headers") or []}
        for field in ("To", "Cc", "Bcc"):
            for address in addresses_in(str(accepted.payload.get(field) or "")):
                copies.append(Copy("postmark", headers.get("Message-ID", ""), address, accepted.message_id))
    return copies


def resend_copies(fake: FakeResend) -> list[Copy]:
    copies = []
    for accepted in list(fake.accepted):
        message_id = (accepted.payload.get("headers") or {}).get("Message-ID", "")
        for field in ("to", "cc", "bcc"):
            for entry in accepted.payload.get(field) or []:
                for address in addresses_in(entry):
                    copies.append(Copy("resend", message_id, address, accepted.id))
    return copies


# ---------------------------------------------------------------------------- the harness


class MailHarness(Harness):
    """tests/test_worker_inprocess.py's harness, for email.send through configured providers."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        super().__init__(settings)
        self.client = client
        # jobs.email.sender caches a sender per id(runtime): an entry left by a runtime of an
        # earlier test that happened to live at the same address is not this runtime's.
        _senders.pop(id(self.runtime), None)

    def send(self, job_id: str, to: str | list[str], **fields: Any) -> str:
        data = {"to": to, "subject": f"Hello {job_id}", "text": f"Body of {job_id}", **fields}
        return self.submit(self.client, {"type": "email.send", "id": job_id, "data": data})

    def event(self, kind: str, job_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The data of the first ``kind`` event of job ``job_id``, once there is one."""
        found: list[dict[str, Any]] = wait_for(
            lambda: [
                e["data"] for e in events(self.client) if e["type"] == kind and e["data"].get("id") == job_id
            ],
            timeout_s=timeout_s,
            what=f"{kind} of {job_id}",
        )
        return found[0]

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [e["data"] for e in events(self.client) if e["type"] == kind]

    def records(self) -> dict[tuple[str, str], EmailDelivery]:
        """Delivery records by (idempotency key, recipient)."""
        with Session(self.runtime.db) as session:
            rows = session.scalars(select(EmailDelivery)).all()
            session.expunge_all()
        return {(row.idempotency_key, row.recipient): row for row in rows}

    def breaker(self, name: str) -> str:
        return breaker_states(self.client, self.runtime.keys.prefix).get(name, "closed")

    def close(self) -> None:
        super().close()
        sender = _senders.pop(id(self.runtime), None)
        if sender is not None:
            for provider in sender.chain.providers:
                provider.close()


def provider_env(
    *,
    sendgrid: FakeSendGrid | None = None,
    postmark: FakePostmark | None = None,
    resend: FakeResend | None = None,
    smtp: FakeSMTP | None = None,
    order: str,
) -> dict[str, str]:
    """TASKMASTER_EMAIL_PROVIDERS in ``order`` and each given fake's base URL and credentials."""
    env = {"TASKMASTER_EMAIL_PROVIDERS": order}
    if sendgrid is not None:
        env |= {
            "TASKMASTER_SENDGRID_API_KEY": sendgrid.api_key,
            "TASKMASTER_SENDGRID_BASE_URL": sendgrid.base_url,
        }
    if postmark is not None:
        env |= {
            "TASKMASTER_POSTMARK_SERVER_TOKEN": postmark.server_token,
            "TASKMASTER_POSTMARK_BASE_URL": postmark.base_url,
        }
    if resend is not None:
        env |= {"TASKMASTER_RESEND_API_KEY": resend.api_key, "TASKMASTER_RESEND_BASE_URL": resend.base_url}
    if smtp is not None:
        env |= {
            "TASKMASTER_SMTP_HOST": smtp.host,
            "TASKMASTER_SMTP_PORT": str(smtp.port),
            "TASKMASTER_SMTP_TLS": "none",
        }
    return env


StartMail = Callable[[dict[str, str]], MailHarness]


@contextmanager
def harnesses(env: dict[str, str], client: redis.Redis) -> Iterator[StartMail]:
    """A function starting a harness with BASE_ENV and the given settings; all closed on exit."""
    started: list[MailHarness] = []

    def start(settings: dict[str, str]) -> MailHarness:
        h = MailHarness(load_settings({**env, **BASE_ENV, **settings}), client)
        started.append(h)
        h.worker.start()
        return h

    try:
        yield start
    finally:
        for h in started:
            h.close()


@pytest.fixture
def start_mail(env: dict[str, str], redis_client: redis.Redis) -> Iterator[StartMail]:
    with harnesses(env, redis_client) as start:
        yield start


@pytest.fixture
def sendgrid() -> Iterator[OutageSendGrid]:
    with OutageSendGrid() as fake:
        yield fake


@pytest.fixture
def postmark() -> Iterator[OutagePostmark]:
    with OutagePostmark() as fake:
        yield fake


def unknown_outcome_failovers(provider: str) -> float:
    value = REGISTRY.get_sample_value(
        "taskmaster_email_unknown_outcome_failovers_total", {"provider": provider}
    )
    return value or 0.0


def address(job_id: str) -> str:
    return f"{job_id}@example.com"


# ---------------------------------------------------------------------------- the tests


def test_failover_and_recovery_deliver_every_email_exactly_once(
    sendgrid: OutageSendGrid, postmark: OutagePostmark, start_mail: StartMail
) -> None:
    """SendGrid fails, its breaker opens, Postmark carries the mail; SendGrid recovers, the probe closes
    the breaker and mail returns to it; every email was accepted once, and records and events agree."""
    h = start_mail(provider_env(sendgrid=sendgrid, postmark=postmark, order="sendgrid,postmark"))
    sent: dict[str, dict[str, Any]] = {}

    def deliver(prefix: str, count: int) -> list[str]:
        ids = [f"{prefix}-{n}" for n in range(count)]
        for job_id in ids:
            h.send(job_id, address(job_id))
        for job_id in ids:
            sent[job_id] = h.event("email.sent", job_id)
        return [sent[job_id]["provider"] for job_id in ids]

    # Given a healthy first provider, mail goes through it.
    assert deliver("healthy", 4) == ["sendgrid"] * 4

    # When it answers 503, its breaker opens after THRESHOLD failures (the emails that met them
    # failed over at once), and from then on it is not called at all.
    sendgrid.down = True
    before = len(sendgrid.received)
    assert deliver("outage", 8) == ["postmark"] * 8
    failed_calls = len(sendgrid.received) - before
    assert THRESHOLD <= failed_calls <= THRESHOLD + 1  # + 1: two worker threads in flight
    assert h.breaker("sendgrid") == "open"
    while_open = len(sendgrid.received)
    assert deliver("open", 6) == ["postmark"] * 6
    assert len(sendgrid.received) == while_open, "an open breaker let calls through"

    # When it recovers, the first email after the cool-down is its half-open probe, which closes it.
    sendgrid.down = False
    probes = 0

    def probe_went_through_sendgrid() -> bool:
        nonlocal probes
        probes += 1
        return deliver(f"probe{probes}", 1) == ["sendgrid"]

    wait_for(probe_went_through_sendgrid, timeout_s=10, interval_s=0.1, what="the half-open probe")
    assert h.breaker("sendgrid") == "closed"
    assert deliver("recovered", 5) == ["sendgrid"] * 5

    # Every email was accepted exactly once, by one provider or the other, under its own Message-ID.
    copies = sendgrid_copies(sendgrid) + postmark_copies(postmark)
    expected = {(stable_message_id(f"id:{job_id}"), address(job_id)): 1 for job_id in sent}
    assert Counter((c.message_id, c.recipient) for c in copies) == expected
    # The records say which provider took each email, with that provider's id; so do the events.
    by_message = {c.message_id: c for c in copies}
    records = h.records()
    for job_id, event in sent.items():
        copy = by_message[stable_message_id(f"id:{job_id}")]
        record = records[(f"id:{job_id}", address(job_id))]
        assert (record.status, record.provider, record.provider_message_id) == (
            "sent",
            copy.provider,
            copy.provider_message_id,
        )
        assert (event["provider"], event["provider_message_id"]) == (copy.provider, copy.provider_message_id)
        assert event["to"] == [address(job_id)] and event["message_id"] == copy.message_id


@pytest.mark.parametrize("first", ["sendgrid", "postmark"])
def test_a_rejected_email_fails_with_the_reason_and_is_not_tried_elsewhere(
    sendgrid: OutageSendGrid, postmark: OutagePostmark, start_mail: StartMail, first: str
) -> None:
    """A validation error (SendGrid 400, Postmark 422) fails the email with email.failed and the
    provider's reason, records it failed, and the next provider is never asked."""
    second = "postmark" if first == "sendgrid" else "sendgrid"
    h = start_mail(provider_env(sendgrid=sendgrid, postmark=postmark, order=f"{first},{second}"))
    # SendGrid's documented 400 for an address it refuses; Postmark's 422 ErrorCode 406 for an
    # inactive recipient, which its fake answers by itself.
    sendgrid.fail_next(
        Reply.json(400, errors(("personalizations.0.to.0.email", "Does not contain a valid address.")))
    )
    postmark.inactive.add("gone@example.com")
    reason = "Does not contain a valid address" if first == "sendgrid" else "marked as inactive"

    h.send("refused", "gone@example.com")
    failed = h.event("email.failed", "refused")
    h.worker.join()

    assert failed["provider"] == first and reason in failed["error"] and failed["to"] == ["gone@example.com"]
    record = h.records()[("id:refused", "gone@example.com")]
    assert (record.status, record.provider) == ("failed", first) and reason in (record.last_error or "")
    fakes: dict[str, FakeHTTPServer] = {"sendgrid": sendgrid, "postmark": postmark}
    assert len(fakes[first].received) == 1, "a rejected email was retried"
    assert fakes[second].received == [], "a rejected email was passed to the next provider"
    assert not h.events_of("email.sent")


def test_refused_credentials_fail_over_to_the_next_provider(
    sendgrid: OutageSendGrid, postmark: OutagePostmark, start_mail: StartMail
) -> None:
    """SendGrid answering 401 to our key passes the email to Postmark, and the key is in no event."""
    wrong_key = "SG.revoked-key.0123456789abcdef"
    settings = provider_env(sendgrid=sendgrid, postmark=postmark, order="sendgrid,postmark")
    h = start_mail({**settings, "TASKMASTER_SENDGRID_API_KEY": wrong_key})

    h.send("creds", address("creds"))
    event = h.event("email.sent", "creds")

    assert event["provider"] == "postmark"
    assert [r.header("Authorization") for r in sendgrid.received] == [f"Bearer {wrong_key}"]
    assert sendgrid.accepted == [] and [c.recipient for c in postmark_copies(postmark)] == [address("creds")]
    assert wrong_key not in repr(events(h.client))


def test_with_every_provider_down_the_email_waits_and_is_sent_once_on_recovery(
    sendgrid: OutageSendGrid, postmark: OutagePostmark, start_mail: StartMail
) -> None:
    """Both providers answering 503: the emails are retried with backoff, none is lost or dead, and
    once Postmark recovers each is sent exactly once."""
    sendgrid.down = postmark.down = True
    h = start_mail(
        {
            **provider_env(sendgrid=sendgrid, postmark=postmark, order="sendgrid,postmark"),
            "TASKMASTER_BREAKER_COOLDOWN": "0.3",
        }
    )
    ids = ["down-0", "down-1", "down-2"]
    for job_id in ids:
        h.send(job_id, address(job_id))

    # Both breakers open, and the emails keep coming back: the half-open probes still meet 503s.
    wait_for(lambda: h.breaker("sendgrid") == h.breaker("postmark") == "open", what="both breakers open")
    after_open = len(postmark.received)
    wait_for(lambda: len(postmark.received) > after_open, what="a retry probing postmark again")
    assert not h.events_of("email.sent") and not h.events_of("email.failed") and not h.events_of("job.dead")

    postmark.down = False
    providers = [h.event("email.sent", job_id)["provider"] for job_id in ids]
    h.worker.join()

    assert providers == ["postmark"] * 3
    expected = {(stable_message_id(f"id:{job_id}"), address(job_id)): 1 for job_id in ids}
    assert Counter((c.message_id, c.recipient) for c in postmark_copies(postmark)) == expected
    assert sendgrid.accepted == [] and not h.events_of("job.dead")
    records = h.records()
    assert all(records[(f"id:{job_id}", address(job_id))].attempts > 1 for job_id in ids)


def test_an_unknown_outcome_fails_over_with_the_same_message_id_and_is_counted(
    sendgrid: OutageSendGrid, start_mail: StartMail
) -> None:
    """Postmark taking the email but answering past the timeout: the email goes on to SendGrid under
    the same Message-ID (a duplicate the recipient's client can recognise), counted as such."""
    with OutagePostmark(delay_s=1.5) as slow_postmark:
        h = start_mail(
            {
                **provider_env(sendgrid=sendgrid, postmark=slow_postmark, order="postmark,sendgrid"),
                "TASKMASTER_PROVIDER_TIMEOUT": "0.3",
            }
        )
        counted = unknown_outcome_failovers("postmark")

        h.send("unsure", address("unsure"))
        event = h.event("email.sent", "unsure")
        # Postmark did take it, after the client had given up.
        (late,) = wait_for(lambda: postmark_copies(slow_postmark), what="postmark's late acceptance")

    assert event["provider"] == "sendgrid"
    assert unknown_outcome_failovers("postmark") == counted + 1
    (copy,) = sendgrid_copies(sendgrid)
    assert copy.message_id == late.message_id == stable_message_id("id:unsure")


def test_an_unknown_outcome_on_resend_is_asked_again_with_the_same_idempotency_key(
    postmark: OutagePostmark, start_mail: StartMail
) -> None:
    """Resend answering past the timeout is asked again under the same Idempotency-Key, replays its
    first answer, and keeps one email; Postmark is never asked."""
    with LateResend() as resend:
        h = start_mail(
            {
                **provider_env(resend=resend, postmark=postmark, order="resend,postmark"),
                "TASKMASTER_PROVIDER_TIMEOUT": "0.3",
            }
        )
        counted = unknown_outcome_failovers("resend")

        h.send("replayed", address("replayed"))
        event = h.event("email.sent", "replayed")
        keys = [r.header("Idempotency-Key") for r in resend.received]

    assert event["provider"] == "resend"
    assert keys == ["id:replayed", "id:replayed"]
    (copy,) = resend_copies(resend)
    assert event["provider_message_id"] == copy.provider_message_id
    assert postmark.received == []
    assert unknown_outcome_failovers("resend") == counted


def test_resend_still_sending_the_first_request_keeps_the_email_on_resend(
    postmark: OutagePostmark, start_mail: StartMail
) -> None:
    """Resend still processing the first request when asked again (409 concurrent_idempotent_requests)
    is asked later under the same key instead of the email going to Postmark too."""
    with FakeResend() as resend:
        resend.hold = threading.Event()
        h = start_mail(
            {
                **provider_env(resend=resend, postmark=postmark, order="resend,postmark"),
                "TASKMASTER_PROVIDER_TIMEOUT": "0.3",
            }
        )
        h.send("in-progress", address("in-progress"))
        wait_for(lambda: len(resend.received) >= 2, what="the retry on resend")
        resend.hold.set()  # the first request completes: Resend sends the email
        event = h.event("email.sent", "in-progress")
        h.worker.join()

    assert len(resend_copies(resend)) == 1
    assert postmark.accepted == [], "the email went to postmark while resend was sending it"
    assert event["provider"] == "resend"


def test_a_rate_limited_email_does_not_take_the_half_open_probe(
    sendgrid: OutageSendGrid, postmark: OutagePostmark, start_mail: StartMail
) -> None:
    """An email that SendGrid's rate limit passes on to Postmark leaves SendGrid's breaker as it was,
    so that the next email SendGrid can take is its probe."""
    # 0.5 a second, a bucket of one: once taken, the next slot is 2 s away, past MAX_RATE_WAIT_S.
    h = start_mail(
        {
            **provider_env(sendgrid=sendgrid, postmark=postmark, order="sendgrid,postmark"),
            "TASKMASTER_SENDGRID_RATE_PER_S": "0.5",
            "TASKMASTER_BREAKER_COOLDOWN": "0.2",
        }
    )
    settings = h.runtime.settings
    breaker = CircuitBreaker.from_settings(
        BreakerBackend(h.client, h.runtime.keys.prefix), "sendgrid", settings
    )
    for _ in range(THRESHOLD):
        breaker.record_failure()
    opened_s = time.monotonic()
    wait_for(lambda: time.monotonic() - opened_s > settings.breaker_cooldown, what="the cool-down")
    limiter = RateLimiter(LimiterBackend(h.client, h.runtime.keys))
    assert limiter.acquire([("email:sendgrid", Rule(0.5, 1.0, burst=1))]).allowed

    h.send("throttled", address("throttled"))

    assert h.event("email.sent", "throttled")["provider"] == "postmark"
    assert sendgrid.received == []
    assert h.breaker("sendgrid") == "open", "the probe went to an email that never tried sendgrid"
