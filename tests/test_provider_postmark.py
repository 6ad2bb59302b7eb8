"""The Postmark provider with requests, against a local Email API fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from jobs.email.providers.base import BatchItem, SendResult
from jobs.email.providers.errors import ProviderError
from jobs.email.providers.factory import build_providers
from jobs.email.providers.postmark import PostmarkProvider
from tests.fakes import sample, unused_port
from tests.fakes.http import Reply
from tests.fakes.postmark import FakePostmark
from worker.settings import load_settings


@pytest.fixture
def fake() -> Iterator[FakePostmark]:
    with FakePostmark() as server:
        yield server


@pytest.fixture
def provider(fake: FakePostmark) -> Iterator[PostmarkProvider]:
    provider = PostmarkProvider(fake.server_token, base_url=fake.base_url, timeout_s=5.0)
    yield provider
    provider.close()


def send(provider: PostmarkProvider, key: str = "id:welcome-1", **fields: object) -> SendResult:
    item = sample(key, **fields)  # type: ignore[arg-type]
    return provider.send(item.message, idempotency_key=item.idempotency_key, envelope_to=item.envelope_to)


def failure(provider: PostmarkProvider, **fields: object) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        send(provider, "id:welcome-1", **fields)
    return caught.value


def test_send_posts_the_documented_body_and_maps_the_message_id(
    fake: FakePostmark, provider: PostmarkProvider
) -> None:
    """POST /email: server token header, JSON both ways, addresses as lists, Metadata and Message-ID."""
    result = send(provider, "id:order-7", cc=["bob@example.com"], bcc=["eve@example.com"])

    (request,) = fake.received
    assert (request.method, request.path) == ("POST", "/email")
    assert request.header("X-Postmark-Server-Token") == fake.server_token
    assert request.header("Accept") == request.header("Content-Type") == "application/json"
    body = request.json()
    assert (body["To"], body["Cc"], body["Bcc"]) == ("ada@example.com", "bob@example.com", "eve@example.com")
    assert body["From"] == '"Taskmaster" <sender@example.com>'
    assert (body["TextBody"], body["HtmlBody"]) == ("Hello there", "<p>Hello there</p>")
    assert body["Metadata"] == {"delivery_id": "id:order-7"}
    assert {"Name": "Message-ID", "Value": sample("id:order-7").message.message_id} in body["Headers"]
    assert body["MessageStream"] == "outbound"
    (accepted,) = fake.accepted
    assert result == SendResult("postmark", accepted.message_id)


def test_an_inactive_recipient_is_rejected_with_error_code_406(
    fake: FakePostmark, provider: PostmarkProvider
) -> None:
    """422 ErrorCode 406: the recipient bounced or complained before; rejected, not retried elsewhere."""
    fake.inactive.add("ada@example.com")
    error = failure(provider)
    assert (error.kind, error.status, error.code, error.outcome) == ("rejected", 422, "406", "definite")
    assert "marked as inactive" in error.message


def test_an_invalid_request_is_rejected_with_error_code_300(provider: PostmarkProvider) -> None:
    """422 ErrorCode 300 names the bad field."""
    error = failure(provider, to=["nobody"])
    assert (error.kind, error.code) == ("rejected", "300")
    assert "Error parsing 'To'" in error.message


def test_a_bad_token_is_an_auth_failure_without_the_token(fake: FakePostmark) -> None:
    """401 ErrorCode 10: kind auth, logged as an error; the token appears nowhere."""
    token = "wrong-token-5f0c2a9e-7d41"
    provider = PostmarkProvider(token, base_url=fake.base_url, timeout_s=5.0)
    with capture_logs() as logs:
        error = failure(provider)
    assert (error.kind, error.status, error.code) == ("auth", 401, "10")
    assert [entry["log_level"] for entry in logs] == ["error"]
    assert token not in str(error) and token not in repr(logs)


def test_rate_limit_is_transient_with_its_retry_after(fake: FakePostmark, provider: PostmarkProvider) -> None:
    """429 with Retry-After: transient, retry_after_s from the header."""
    fake.fail_next(FakePostmark.rate_limited(retry_after_s=7))
    error = failure(provider)
    assert (error.kind, error.status, error.retry_after_s, error.outcome) == (
        "transient",
        429,
        7.0,
        "definite",
    )


def test_a_server_error_is_transient_and_definite(fake: FakePostmark, provider: PostmarkProvider) -> None:
    """500: transient, nothing taken."""
    fake.fail_next(FakePostmark.server_error(500))
    error = failure(provider)
    assert (error.kind, error.status, error.outcome) == ("transient", 500, "definite")


def test_a_proxy_error_page_is_transient(fake: FakePostmark, provider: PostmarkProvider) -> None:
    """A 502 that is not Postmark's JSON still classifies, by its status."""
    fake.fail_next(Reply.text(502, "<html>Bad Gateway</html>"))
    error = failure(provider)
    assert (error.kind, error.status) == ("transient", 502)


def test_a_wrong_base_url_is_not_the_emails_fault(fake: FakePostmark) -> None:
    """404 from a base URL that is not Postmark's: every email would fail alike, so auth, not rejected."""
    provider = PostmarkProvider(fake.server_token, base_url=fake.base_url + "/v2", timeout_s=5.0)
    error = failure(provider)
    provider.close()
    assert (error.kind, error.status) == ("auth", 404)


def test_a_timeout_is_an_unknown_outcome(fake: FakePostmark) -> None:
    """No answer within the timeout: transient, and Postmark may have accepted it."""
    fake.delay_s = 2.0
    provider = PostmarkProvider(fake.server_token, base_url=fake.base_url, timeout_s=0.2)
    error = failure(provider)
    assert (error.kind, error.outcome) == ("transient", "unknown")


def test_a_refused_connection_is_definite() -> None:
    """Nothing listening: transient, and certainly not accepted."""
    provider = PostmarkProvider("t", base_url=f"http://127.0.0.1:{unused_port()}", timeout_s=2.0)
    error = failure(provider)
    assert (error.kind, error.outcome) == ("transient", "definite")


def test_sends_from_one_thread_reuse_one_connection(fake: FakePostmark, provider: PostmarkProvider) -> None:
    """Three sends in a row: one TCP connection, kept alive."""
    for key in ("id:1", "id:2", "id:3"):
        send(provider, key)
    assert len(fake.accepted) == 3
    assert fake.connections == 1


def test_a_batch_is_one_request_with_results_in_order(fake: FakePostmark, provider: PostmarkProvider) -> None:
    """/email/batch answers 200 with a result per message; the bad one fails alone, in its place."""
    items = [sample("id:a"), sample("id:b", to=["broken"]), sample("id:c")]
    results = provider.send_batch(items)

    (request,) = fake.received
    assert request.path == "/email/batch"
    assert [m["Metadata"]["delivery_id"] for m in request.json()] == ["id:a", "id:b", "id:c"]
    first, middle, last = results
    assert isinstance(first, SendResult) and isinstance(last, SendResult)
    assert [first.provider_message_id, last.provider_message_id] == [a.message_id for a in fake.accepted]
    assert isinstance(middle, ProviderError) and (middle.kind, middle.code) == ("rejected", "300")


def test_a_batch_over_500_is_split(fake: FakePostmark, provider: PostmarkProvider) -> None:
    """501 emails: two batch requests, 500 and 1, every result in order."""
    one = sample()  # built once: building 501 messages would be most of this test's time
    items = [BatchItem(one.message, f"id:{n}", one.envelope_to) for n in range(501)]
    results = provider.send_batch(items)
    assert [len(r.json()) for r in fake.received] == [500, 1]
    assert all(isinstance(r, SendResult) for r in results) and len(results) == 501


def test_a_batch_refused_whole_gives_every_email_the_error(fake: FakePostmark) -> None:
    """401 on the batch: every item gets the auth error."""
    provider = PostmarkProvider("wrong", base_url=fake.base_url, timeout_s=5.0)
    results = provider.send_batch([sample("id:a"), sample("id:b")])
    assert [(r.kind, r.status) for r in results if isinstance(r, ProviderError)] == [("auth", 401)] * 2


def test_a_long_delivery_id_fits_postmarks_metadata_limit(
    fake: FakePostmark, provider: PostmarkProvider
) -> None:
    """Metadata values stop at 80 characters: a longer key is sent as its digest."""
    send(provider, "id:" + "x" * 200)
    value = fake.accepted[0].payload["Metadata"]["delivery_id"]
    assert value.startswith("sha256:") and len(value) <= 80


def test_the_factory_builds_postmark_from_settings(fake: FakePostmark, tmp_path: Path) -> None:
    """TASKMASTER_EMAIL_PROVIDERS=postmark builds a Postmark provider on its base URL and token."""
    settings = load_settings(
        {
            "TASKMASTER_DATA_DIR": str(tmp_path),
            "TASKMASTER_EMAIL_FROM": "sender@example.com",
            "TASKMASTER_EMAIL_PROVIDERS": "postmark",
            "TASKMASTER_POSTMARK_SERVER_TOKEN": fake.server_token,
            "TASKMASTER_POSTMARK_BASE_URL": fake.base_url + "/",
        }
    )
    (provider,) = build_providers(settings)
    assert isinstance(provider, PostmarkProvider)
    send(provider)
    provider.close()
    assert len(fake.accepted) == 1
