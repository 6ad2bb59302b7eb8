"""The SendGrid provider through the official library, against a local Mail Send fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from jobs.email.providers.base import SendResult
from jobs.email.providers.errors import ProviderError
from jobs.email.providers.factory import build_providers
from jobs.email.providers.outbox import OutboxProvider
from jobs.email.providers.sendgrid import SendGridProvider
from tests.fakes import sample, unused_port
from tests.fakes.sendgrid import FakeSendGrid
from worker.settings import load_settings


@pytest.fixture
def fake() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as server:
        yield server


def provider_for(
    fake: FakeSendGrid, *, api_key: str | None = None, timeout_s: float = 5.0
) -> SendGridProvider:
    return SendGridProvider(api_key or fake.api_key, base_url=fake.base_url, timeout_s=timeout_s)


def send(provider: SendGridProvider, **fields: object) -> SendResult:
    item = sample(**fields)  # type: ignore[arg-type]
    return provider.send(item.message, idempotency_key=item.idempotency_key, envelope_to=item.envelope_to)


def failure(provider: SendGridProvider, **fields: object) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        send(provider, **fields)
    return caught.value


def test_send_posts_the_documented_body_and_maps_the_message_id(fake: FakeSendGrid) -> None:
    """One mail/send: bearer key, one personalization, text before html, custom_args; id from X-Message-Id."""
    item = sample("id:order-7", to=["ada@example.com"], cc=["bob@example.com"], bcc=["eve@example.com"])
    result = provider_for(fake).send(
        item.message, idempotency_key=item.idempotency_key, envelope_to=item.envelope_to
    )

    (request,) = fake.received
    assert (request.method, request.path) == ("POST", "/v3/mail/send")
    assert request.header("Authorization") == f"Bearer {fake.api_key}"
    assert request.header("Content-Type") == "application/json"
    body = request.json()
    assert body["personalizations"] == [
        {
            "to": [{"email": "ada@example.com"}],
            "cc": [{"email": "bob@example.com"}],
            "bcc": [{"email": "eve@example.com"}],
        }
    ]
    assert body["from"] == {"email": "sender@example.com", "name": "Taskmaster"}
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["custom_args"] == {"delivery_id": "id:order-7"}
    assert body["headers"]["Message-ID"] == item.message.message_id
    (accepted,) = fake.accepted
    assert result == SendResult("sendgrid", accepted.message_id)


def test_an_invalid_address_is_rejected_with_sendgrids_reason(fake: FakeSendGrid) -> None:
    """400 with errors[].field/message: rejected, definite, the reason kept."""
    error = failure(provider_for(fake), to=["not-an-address"])
    assert (error.kind, error.status, error.outcome) == ("rejected", 400, "definite")
    assert "personalizations.0.to.0.email: Does not contain a valid address" in error.message
    assert fake.accepted == []


def test_a_bad_key_is_an_auth_failure_logged_loudly_without_the_key(fake: FakeSendGrid) -> None:
    """401: kind auth, an error log line, and the key neither in the error nor in the log."""
    wrong_key = "SG.wrong-key-0123456789.abcdefghijklmnop"
    with capture_logs() as logs:
        error = failure(provider_for(fake, api_key=wrong_key))
    assert (error.kind, error.status) == ("auth", 401)
    assert "authorization grant is invalid" in error.message
    assert [entry["log_level"] for entry in logs] == ["error"]
    assert wrong_key not in str(error) and wrong_key not in repr(logs)


def test_rate_limit_is_transient_with_the_reset_time_as_retry_after(fake: FakeSendGrid) -> None:
    """429 with X-RateLimit-Reset (a Unix time): transient, definite, retry after about that long."""
    fake.fail_next(FakeSendGrid.rate_limited(reset_in_s=30))
    error = failure(provider_for(fake))
    assert (error.kind, error.status, error.outcome) == ("transient", 429, "definite")
    assert error.retry_after_s is not None and 25 <= error.retry_after_s <= 31


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_transient_and_definite(fake: FakeSendGrid, status: int) -> None:
    """5xx: the provider took nothing; fail over at once."""
    fake.fail_next(FakeSendGrid.server_error(status))
    error = failure(provider_for(fake))
    assert (error.kind, error.status, error.outcome) == ("transient", status, "definite")


def test_a_timeout_after_the_request_went_out_is_an_unknown_outcome(fake: FakeSendGrid) -> None:
    """No answer within the timeout: transient, and SendGrid may have accepted it."""
    fake.delay_s = 2.0
    error = failure(provider_for(fake, timeout_s=0.2))
    assert (error.kind, error.outcome, error.status) == ("transient", "unknown", None)


def test_a_hang_up_without_an_answer_is_an_unknown_outcome(fake: FakeSendGrid) -> None:
    """The connection dropped after the request: transient, unknown."""
    fake.drop_next()
    error = failure(provider_for(fake))
    assert (error.kind, error.outcome) == ("transient", "unknown")


def test_a_refused_connection_is_transient_and_definite() -> None:
    """Nothing listening: nothing was sent."""
    provider = SendGridProvider("SG.x.y", base_url=f"http://127.0.0.1:{unused_port()}", timeout_s=2.0)
    error = failure(provider)
    assert (error.kind, error.outcome) == ("transient", "definite")


def test_a_batch_is_one_request_per_email_with_results_in_order(fake: FakeSendGrid) -> None:
    """send_batch: three requests; the bad middle email fails alone."""
    items = [sample("id:a"), sample("id:b", to=["broken"]), sample("id:c")]
    results = provider_for(fake).send_batch(items)
    assert len(fake.received) == 3
    assert isinstance(results[0], SendResult) and isinstance(results[2], SendResult)
    assert isinstance(results[1], ProviderError) and results[1].kind == "rejected"
    assert [a.payload["custom_args"]["delivery_id"] for a in fake.accepted] == ["id:a", "id:c"]


def test_the_factory_builds_sendgrid_from_settings_in_order(fake: FakeSendGrid, tmp_path: Path) -> None:
    """TASKMASTER_EMAIL_PROVIDERS=sendgrid,outbox gives SendGrid first, pointed at its base URL."""
    settings = load_settings(
        {
            "TASKMASTER_DATA_DIR": str(tmp_path),
            "TASKMASTER_EMAIL_FROM": "sender@example.com",
            "TASKMASTER_EMAIL_PROVIDERS": "sendgrid,outbox",
            "TASKMASTER_SENDGRID_API_KEY": fake.api_key,
            "TASKMASTER_SENDGRID_BASE_URL": fake.base_url,
        }
    )
    sendgrid, outbox = build_providers(settings)
    assert isinstance(sendgrid, SendGridProvider) and isinstance(outbox, OutboxProvider)
    item = sample()
    sendgrid.send(item.message, idempotency_key=item.idempotency_key, envelope_to=item.envelope_to)
    assert len(fake.accepted) == 1
