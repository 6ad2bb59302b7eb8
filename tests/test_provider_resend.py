"""The Resend provider with requests, against a local fake of its email endpoints."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from jobs.email.providers.base import USER_AGENT, BatchItem, SendResult
from jobs.email.providers.errors import ProviderError
from jobs.email.providers.factory import build_providers
from jobs.email.providers.resend import ResendProvider
from tests.fakes import sample, unused_port
from tests.fakes.http import Reply
from tests.fakes.resend import FakeResend
from tests.helpers import wait_for
from worker.settings import load_settings


@pytest.fixture
def fake() -> Iterator[FakeResend]:
    with FakeResend() as server:
        yield server


@pytest.fixture
def provider(fake: FakeResend) -> Iterator[ResendProvider]:
    provider = ResendProvider(fake.api_key, base_url=fake.base_url, timeout_s=5.0)
    yield provider
    provider.close()


def send(provider: ResendProvider, key: str = "id:welcome-1", **fields: object) -> SendResult:
    item = sample(key, **fields)  # type: ignore[arg-type]
    return provider.send(item.message, idempotency_key=item.idempotency_key, envelope_to=item.envelope_to)


def failure(provider: ResendProvider, key: str = "id:welcome-1", **fields: object) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        send(provider, key, **fields)
    return caught.value


def test_send_posts_the_documented_body_and_maps_the_id(fake: FakeResend, provider: ResendProvider) -> None:
    """POST /emails: bearer key, our User-Agent, the Idempotency-Key; the answer's id is the message id."""
    result = send(provider, "id:order-7", cc=["bob@example.com"], bcc=["eve@example.com"])

    (request,) = fake.received
    assert (request.method, request.path) == ("POST", "/emails")
    assert request.header("Authorization") == f"Bearer {fake.api_key}"
    assert request.header("User-Agent") == USER_AGENT
    assert request.header("Idempotency-Key") == "id:order-7"
    body = request.json()
    assert (body["to"], body["cc"], body["bcc"]) == (
        ["ada@example.com"],
        ["bob@example.com"],
        ["eve@example.com"],
    )
    assert body["from"] == '"Taskmaster" <sender@example.com>'
    assert (body["text"], body["html"]) == ("Hello there", "<p>Hello there</p>")
    assert body["headers"]["Message-ID"] == sample("id:order-7").message.message_id
    (accepted,) = fake.accepted
    assert result == SendResult("resend", accepted.id)


def test_the_same_key_twice_sends_one_email(fake: FakeResend, provider: ResendProvider) -> None:
    """A retry with the same key and payload gets the first answer replayed; the fake holds one email."""
    first = send(provider, "id:retry-me")
    again = send(provider, "id:retry-me")
    assert first == again
    assert len(fake.received) == 2 and len(fake.accepted) == 1


def test_the_same_key_with_another_payload_is_a_409_of_unknown_outcome(
    fake: FakeResend, provider: ResendProvider
) -> None:
    """invalid_idempotent_request: not this email's to send elsewhere, and the first may have gone."""
    send(provider, "id:k", subject="First")
    error = failure(provider, "id:k", subject="Changed")
    assert (error.kind, error.status, error.code, error.outcome) == (
        "rejected",
        409,
        "invalid_idempotent_request",
        "unknown",
    )
    assert len(fake.accepted) == 1


def test_a_retry_while_the_first_is_in_progress_is_transient(fake: FakeResend) -> None:
    """concurrent_idempotent_requests: transient, unknown (the first may succeed), retry soon."""
    fake.hold = threading.Event()
    provider = ResendProvider(fake.api_key, base_url=fake.base_url, timeout_s=5.0)
    first = threading.Thread(target=send, args=(provider, "id:twice"))
    first.start()
    wait_for(fake.in_progress, what="the first request to be in progress")
    error = failure(provider, "id:twice")
    fake.hold.set()
    first.join()
    provider.close()
    assert (error.kind, error.code, error.outcome, error.retry_after_s) == (
        "transient",
        "concurrent_idempotent_requests",
        "unknown",
        1.0,
    )


def test_an_invalid_key_is_an_auth_failure_without_the_key(fake: FakeResend) -> None:
    """403 invalid_api_key: kind auth, logged as an error; the key appears nowhere."""
    key = "re_wrongKey0123456789abcdef"
    provider = ResendProvider(key, base_url=fake.base_url, timeout_s=5.0)
    with capture_logs() as logs:
        error = failure(provider)
    assert (error.kind, error.status, error.code) == ("auth", 403, "invalid_api_key")
    assert [entry["log_level"] for entry in logs] == ["error"]
    assert key not in str(error) and key not in repr(logs)


def test_an_edge_403_without_json_is_an_auth_failure(fake: FakeResend, provider: ResendProvider) -> None:
    """The plain-text 403 "error code: 1010" (no User-Agent) is still classified, by status."""
    fake.fail_next(Reply.text(403, "error code: 1010"))
    error = failure(provider)
    assert (error.kind, error.status, error.code) == ("auth", 403, None)
    assert "1010" in error.message


def test_a_missing_field_is_rejected_with_resends_reason(provider: ResendProvider) -> None:
    """422 validation_error for a bad address: rejected, with Resend's message."""
    error = failure(provider, to=["not-an-address"])
    assert (error.kind, error.status, error.code) == ("rejected", 422, "validation_error")
    assert "Invalid `to` field" in error.message


def test_rate_limit_is_transient_with_its_retry_after(fake: FakeResend, provider: ResendProvider) -> None:
    """429 rate_limit_exceeded with retry-after: 1."""
    fake.fail_next(FakeResend.rate_limited(retry_after_s=1))
    error = failure(provider)
    assert (error.kind, error.code, error.retry_after_s, error.outcome) == (
        "transient",
        "rate_limit_exceeded",
        1.0,
        "definite",
    )


@pytest.mark.parametrize(("period", "at_least_s"), [("daily", 3600.0), ("monthly", 86400.0)])
def test_a_quota_429_waits_hours_not_seconds(
    fake: FakeResend, provider: ResendProvider, period: str, at_least_s: float
) -> None:
    """daily/monthly_quota_exceeded: transient, with a long retry_after whatever the header says."""
    fake.fail_next(FakeResend.quota_exceeded(period))
    error = failure(provider)
    assert error.kind == "transient" and error.code == f"{period}_quota_exceeded"
    assert error.retry_after_s is not None and error.retry_after_s >= at_least_s


def test_a_server_error_is_transient_and_definite(fake: FakeResend, provider: ResendProvider) -> None:
    """500 application_error: transient, nothing taken."""
    fake.fail_next(FakeResend.server_error())
    error = failure(provider)
    assert (error.kind, error.status, error.outcome) == ("transient", 500, "definite")


def test_a_timeout_is_an_unknown_outcome(fake: FakeResend) -> None:
    """No answer within the timeout: transient, unknown; a retry with the same key is safe."""
    fake.delay_s = 2.0
    provider = ResendProvider(fake.api_key, base_url=fake.base_url, timeout_s=0.2)
    error = failure(provider)
    assert (error.kind, error.outcome) == ("transient", "unknown")


def test_a_hang_up_is_unknown_and_a_refused_connection_definite(fake: FakeResend) -> None:
    """Dropped after the request: unknown. Nothing listening: definite."""
    fake.drop_next()
    provider = ResendProvider(fake.api_key, base_url=fake.base_url, timeout_s=5.0)
    assert failure(provider).outcome == "unknown"
    nowhere = ResendProvider(fake.api_key, base_url=f"http://127.0.0.1:{unused_port()}", timeout_s=2.0)
    assert failure(nowhere).outcome == "definite"


def test_a_batch_is_permissive_with_results_in_order(fake: FakeResend, provider: ResendProvider) -> None:
    """/emails/batch in permissive mode: the bad email fails alone, the ids land in their places."""
    items = [sample("id:a"), sample("id:b", to=["broken"]), sample("id:c")]
    results = provider.send_batch(items)

    (request,) = fake.received
    assert request.path == "/emails/batch"
    assert request.header("x-batch-validation") == "permissive"
    assert (request.header("Idempotency-Key") or "").startswith("batch:")
    first, middle, last = results
    assert isinstance(first, SendResult) and isinstance(last, SendResult)
    assert [first.provider_message_id, last.provider_message_id] == [a.id for a in fake.accepted]
    assert isinstance(middle, ProviderError) and middle.kind == "rejected"


def test_a_retried_batch_is_replayed_not_resent(fake: FakeResend, provider: ResendProvider) -> None:
    """The same emails again make the same batch key: one set of emails on the fake."""
    items = [sample("id:a"), sample("id:b")]
    assert provider.send_batch(items) == provider.send_batch(items)
    assert len(fake.accepted) == 2


def test_a_batch_over_100_is_split(fake: FakeResend, provider: ResendProvider) -> None:
    """101 emails: two requests of 100 and 1."""
    one = sample()
    results = provider.send_batch([BatchItem(one.message, f"id:{n}", one.envelope_to) for n in range(101)])
    assert [len(r.json()) for r in fake.received] == [100, 1]
    assert all(isinstance(r, SendResult) for r in results)


def test_the_factory_builds_resend_from_settings(fake: FakeResend, tmp_path: Path) -> None:
    """TASKMASTER_EMAIL_PROVIDERS=resend builds a Resend provider on its base URL and key."""
    settings = load_settings(
        {
            "TASKMASTER_DATA_DIR": str(tmp_path),
            "TASKMASTER_EMAIL_FROM": "sender@example.com",
            "TASKMASTER_EMAIL_PROVIDERS": "resend",
            "TASKMASTER_RESEND_API_KEY": fake.api_key,
            "TASKMASTER_RESEND_BASE_URL": fake.base_url,
        }
    )
    (provider,) = build_providers(settings)
    assert isinstance(provider, ResendProvider)
    send(provider)
    provider.close()
    assert len(fake.accepted) == 1
