"""The FCM client: real google-auth and requests against the local token endpoint and FCM."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import _helpers as google_auth_helpers
from pydantic import ValidationError

from jobs.push.config import FcmConfig, check_credentials_file, fcm_config
from jobs.push.errors import (
    FcmAuthError,
    FcmTransient,
    FcmUnreachable,
    MessageRejected,
    PushUnavailable,
    TokenUnregistered,
    classify,
    parse_failure,
    parse_retry_after,
)
from jobs.push.fcm import FcmClient, build_message
from jobs.push.models import PushSend
from tests.fakes.fcm import (
    ERRORS,
    FakeFcm,
    FakeGoogleOAuth,
    Outcome,
    ServiceAccount,
    make_service_account,
    running,
)
from tests.helpers import wait_for
from worker.errors import ConfigError
from worker.registry import load_job_modules
from worker.settings import load_settings

PUSH = PushSend(user_id="u1", title="Standup", body="in 5 minutes", data={"task_id": "t1"})


@pytest.fixture
def account(tmp_path: Path) -> ServiceAccount:
    return make_service_account(tmp_path / "sa")


@pytest.fixture
def fakes(account: ServiceAccount) -> Iterator[tuple[FakeGoogleOAuth, FakeFcm]]:
    with running(account) as pair:
        yield pair


def client_for(account: ServiceAccount, oauth: FakeGoogleOAuth, fcm: FakeFcm, **changes: str) -> FcmClient:
    config = FcmConfig(
        project_id=changes.get("project_id", account.project_id),
        credentials_file=account.path,
        base_url=changes.get("base_url", fcm.base_url),
        token_uri=oauth.token_uri,
        timeout_s=5.0,
    )
    return FcmClient(config)


def test_send_signs_in_with_the_service_account_and_delivers(
    account: ServiceAccount, fakes: tuple[FakeGoogleOAuth, FakeFcm]
) -> None:
    """One send: a verified JWT grant at the overridden token URI, then the documented v1 request."""
    oauth, fcm = fakes
    client = client_for(account, oauth, fcm)

    name = client.send(build_message("device-a", PUSH))

    assert name.startswith(f"projects/{account.project_id}/messages/")
    assert oauth.grant_count == 1 and not oauth.refusals
    (grant,) = oauth.grants.values()
    assert grant.client_email == account.client_email
    assert grant.scopes == ("https://www.googleapis.com/auth/firebase.messaging",)
    (received,) = fcm.delivered("device-a")
    assert received.bearer in oauth.grants
    assert received.message == {
        "token": "device-a",
        "notification": {"title": "Standup", "body": "in 5 minutes"},
        "data": {"task_id": "t1"},
    }


def test_the_access_token_is_cached_between_sends(
    account: ServiceAccount, fakes: tuple[FakeGoogleOAuth, FakeFcm]
) -> None:
    """Several sends reuse one access token while it is far from expiry."""
    oauth, fcm = fakes
    client = client_for(account, oauth, fcm)
    for n in range(3):
        client.send(build_message(f"device-{n}", PUSH))
    assert oauth.grant_count == 1
    assert len({r.bearer for r in fcm.delivered()}) == 1


def test_an_expiring_token_is_refreshed_before_use(account: ServiceAccount) -> None:
    """A token within google-auth's refresh margin of expiry is replaced before the next send."""
    # Given a token endpoint granting tokens one second longer than google-auth's margin
    margin_s = int(google_auth_helpers.REFRESH_THRESHOLD.total_seconds())
    with running(account, expires_in_s=margin_s + 1) as (oauth, fcm):
        client = client_for(account, oauth, fcm)
        client.send(build_message("device-a", PUSH))
        # When that second has passed
        wait_for(lambda: client.credentials.expired, timeout_s=5, what="the token to near expiry")
        client.send(build_message("device-a", PUSH))
        # Then a second token was fetched and used
        assert oauth.grant_count == 2
        first, second = fcm.delivered("device-a")
        assert first.bearer != second.bearer


def test_a_token_refused_by_fcm_is_refreshed_once_and_the_send_repeated(
    account: ServiceAccount, fakes: tuple[FakeGoogleOAuth, FakeFcm]
) -> None:
    """401 UNAUTHENTICATED (token revoked early): a fresh token, the same message sent again."""
    oauth, fcm = fakes
    client = client_for(account, oauth, fcm)
    client.send(build_message("device-a", PUSH))
    oauth.revoke_all()

    client.send(build_message("device-b", PUSH))

    assert oauth.grant_count == 2
    assert [r.status for r in fcm.requests_for("device-b")] == [401, 200]


@pytest.mark.parametrize(
    ("token", "error", "code"),
    [
        ("unregistered-1", TokenUnregistered, "UNREGISTERED"),
        ("invalid-1", MessageRejected, "INVALID_ARGUMENT"),
        ("mismatch-1", MessageRejected, "SENDER_ID_MISMATCH"),
        ("thirdparty-1", MessageRejected, "THIRD_PARTY_AUTH_ERROR"),
        ("unavailable-1", FcmTransient, "UNAVAILABLE"),
        ("internal-1", FcmTransient, "INTERNAL"),
    ],
)
def test_each_documented_error_code_is_classified(
    account: ServiceAccount,
    fakes: tuple[FakeGoogleOAuth, FakeFcm],
    token: str,
    error: type[Exception],
    code: str,
) -> None:
    """FCM's error codes become the error that says what to do with the token."""
    oauth, fcm = fakes
    client = client_for(account, oauth, fcm)
    with pytest.raises(error) as caught:
        client.send(build_message(token, PUSH))
    assert caught.value.code == code  # type: ignore[attr-defined]
    assert token not in str(caught.value)
    # THIRD_PARTY_AUTH_ERROR is a 401 too, but not about our token: no refresh, no resend.
    assert oauth.grant_count == 1 and len(fcm.requests_for(token)) == 1


def test_quota_exceeded_carries_retry_after(
    account: ServiceAccount, fakes: tuple[FakeGoogleOAuth, FakeFcm]
) -> None:
    """429 QUOTA_EXCEEDED: the Retry-After seconds, or FCM's one-minute refill without it."""
    oauth, fcm = fakes
    client = client_for(account, oauth, fcm)
    fcm.script("device-a", Outcome("QUOTA_EXCEEDED", retry_after="7"), Outcome("QUOTA_EXCEEDED"))
    with pytest.raises(FcmTransient) as with_header:
        client.send(build_message("device-a", PUSH))
    with pytest.raises(FcmTransient) as without_header:
        client.send(build_message("device-a", PUSH))
    assert with_header.value.code == "QUOTA_EXCEEDED" and with_header.value.retry_after_s == 7.0
    assert without_header.value.retry_after_s == 60.0


def test_a_project_the_account_cannot_send_for_is_an_auth_error(
    account: ServiceAccount, fakes: tuple[FakeGoogleOAuth, FakeFcm]
) -> None:
    """403 PERMISSION_DENIED without an FCM code concerns the channel, not the token."""
    oauth, fcm = fakes
    client = client_for(account, oauth, fcm, project_id="someone-else")
    with pytest.raises(FcmAuthError, match="PERMISSION_DENIED"):
        client.send(build_message("device-a", PUSH))


def test_a_refused_grant_is_an_auth_error_without_secrets(
    tmp_path: Path, fakes: tuple[FakeGoogleOAuth, FakeFcm]
) -> None:
    """The token endpoint refusing the account raises FcmAuthError quoting Google's reason only."""
    oauth, fcm = fakes
    stranger = make_service_account(tmp_path / "other", project_id="stranger")
    client = client_for(stranger, oauth, fcm, project_id="taskmaster-test")
    with pytest.raises(FcmAuthError, match="account not found") as caught:
        client.send(build_message("device-a", PUSH))
    assert "PRIVATE KEY" not in str(caught.value) and "eyJ" not in str(caught.value)
    assert fcm.sends == []


def test_an_assertion_signed_with_another_key_is_refused(
    tmp_path: Path, account: ServiceAccount, fakes: tuple[FakeGoogleOAuth, FakeFcm]
) -> None:
    """The fake endpoint verifies the RS256 signature: a key file with a foreign key gets no token."""
    oauth, fcm = fakes
    forged = make_service_account(tmp_path / "forged", signing_key=rsa.generate_private_key(65537, 2048))
    assert forged.client_email == account.client_email
    client = client_for(forged, oauth, fcm)
    with pytest.raises(FcmAuthError, match="Invalid JWT Signature"):
        client.send(build_message("device-a", PUSH))
    assert oauth.grant_count == 0 and fcm.sends == []


def test_an_unreachable_fcm_is_transient(
    account: ServiceAccount, fakes: tuple[FakeGoogleOAuth, FakeFcm]
) -> None:
    """No answer from FCM: FcmUnreachable, a transient error the job retries."""
    oauth, fcm = fakes
    client = client_for(account, oauth, fcm, base_url="http://127.0.0.1:9")
    with pytest.raises(FcmUnreachable):
        client.send(build_message("device-a", PUSH))


def test_a_token_endpoint_that_hangs_up_is_transient(
    account: ServiceAccount, fakes: tuple[FakeGoogleOAuth, FakeFcm]
) -> None:
    """The token endpoint closing the connection unanswered: FcmUnreachable, nothing sent."""
    oauth, fcm = fakes
    oauth.drop_next()
    with pytest.raises(FcmUnreachable, match="token endpoint"):
        client_for(account, oauth, fcm).send(build_message("device-a", PUSH))
    assert fcm.sends == []


def test_a_malformed_message_is_refused_by_fcm(
    account: ServiceAccount, fakes: tuple[FakeGoogleOAuth, FakeFcm]
) -> None:
    """A data value that is not a string gets FCM's 400 with a BadRequest field violation."""
    oauth, fcm = fakes
    with pytest.raises(MessageRejected, match=r"message\.data\[0\]\.value") as caught:
        client_for(account, oauth, fcm).send({"message": {"token": "device-a", "data": {"n": 12}}})
    assert caught.value.code == "INVALID_ARGUMENT"


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_classify_reads_the_error_code_from_details(code: str) -> None:
    """The documented bodies classify by details[].errorCode, not by HTTP status alone."""
    from tests.fakes.fcm import _google_error

    http, status, message = ERRORS[code]
    failure = parse_failure(http, json.dumps(_google_error(http, status, message, code)).encode(), None)
    assert failure.error_code == code and failure.status == status
    assert classify(failure).code == code


def test_a_non_json_error_body_still_classifies() -> None:
    """A proxy's HTML 502 page is transient; its text does not become the error code."""
    failure = parse_failure(502, b"<html>Bad Gateway</html>", None)
    assert isinstance(classify(failure), FcmTransient) and failure.code == "HTTP_502"


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    """Retry-After is delay-seconds or an HTTP-date (RFC 9110)."""
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:45 GMT", now=now) == 45.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_build_message_links_https_urls_for_web_push() -> None:
    """url and notification_id reach the app as data; an https url is also the web push link."""
    push = PushSend(
        user_id="u1", title="t", body="b", url="https://app.example.com/t/1", notification_id="n1"
    )
    message = build_message("device-a", push)["message"]
    assert message["data"] == {"url": "https://app.example.com/t/1", "notification_id": "n1"}
    assert message["webpush"] == {"fcm_options": {"link": "https://app.example.com/t/1"}}
    plain = build_message("device-a", PushSend(user_id="u1", title="t", body="b", url="http://x.example/"))
    assert "webpush" not in plain["message"]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"data": {"count": 3}}, "valid string"),
        ({"data": {"google.sent_time": "1"}}, "reserved by FCM"),
        ({"data": {"from": "x"}}, "reserved by FCM"),
        ({"data": {"blob": "x" * 5000}}, "FCM accepts 4096"),
        ({"url": "javascript:alert(1)"}, "http or https"),
        ({"url": "https://a.example/", "data": {"url": "https://b.example/"}}, "both given"),
    ],
)
def test_push_data_fcm_would_refuse_is_refused_up_front(data: dict[str, object], problem: str) -> None:
    """Data FCM rejects with INVALID_ARGUMENT fails validation before any request."""
    with pytest.raises(ValidationError, match=problem):
        PushSend.model_validate({"user_id": "u1", "title": "t", "body": "b", **data})


def test_missing_settings_make_the_channel_unavailable(account: ServiceAccount) -> None:
    """Without the project id or the key file, the error names the missing setting."""
    with pytest.raises(PushUnavailable, match="TASKMASTER_FCM_PROJECT_ID"):
        fcm_config(load_settings({"TASKMASTER_FCM_CREDENTIALS_FILE": str(account.path)}))
    with pytest.raises(PushUnavailable, match="TASKMASTER_FCM_CREDENTIALS_FILE"):
        fcm_config(load_settings({"TASKMASTER_FCM_PROJECT_ID": "p"}))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist"),
        ("not json {", "is not JSON"),
        (json.dumps({"type": "authorized_user", "refresh_token": "1//x"}), "not a service account key file"),
        (json.dumps({"type": "service_account", "client_email": "a@b.c"}), "lacks private_key"),
        (
            json.dumps({"type": "service_account", "client_email": "a@b.c", "private_key": "garbage"}),
            "cannot be used",
        ),
    ],
)
def test_settings_check_refuses_a_bad_credentials_file(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    """The start-up check names TASKMASTER_FCM_CREDENTIALS_FILE and what is wrong, never the file's text."""
    path = tmp_path / "key.json"
    if content is not None:
        path.write_text(content)
    settings = load_settings({"TASKMASTER_FCM_CREDENTIALS_FILE": str(path)})
    with pytest.raises(ConfigError, match=problem) as caught:
        load_job_modules(["jobs.push"]).check_settings(settings)
    assert "TASKMASTER_FCM_CREDENTIALS_FILE" in str(caught.value)
    assert "1//x" not in str(caught.value) and "garbage" not in str(caught.value)


def test_settings_check_passes_a_service_account_or_no_file(account: ServiceAccount) -> None:
    """A real service account key passes; with no file named there is nothing to check."""
    check_credentials_file(load_settings({"TASKMASTER_FCM_CREDENTIALS_FILE": str(account.path)}))
    check_credentials_file(load_settings({}))
