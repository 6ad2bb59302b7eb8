"""Provider webhook verification, as each provider documents it, and at the real intake.

The signatures here are made the way each provider makes them, independently of the code
under test: SendGrid signs with ECDSA P-256/SHA-256 over timestamp + body (a key pair made
here; SendGrid's own `sendgrid.helpers.eventwebhook` accepts what we sign), Svix (Resend) with
HMAC-SHA256 over "{id}.{timestamp}.{body}" ("Verifying Webhooks Manually", docs.svix.com),
Postmark with HTTP basic auth credentials (postmarkapp.com/developer/webhooks).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from jobs.email.tracking import verify
from jobs.email.tracking.errors import VerificationFailed
from jobs.email.tracking.models import ProviderEventData
from tests.helpers import read_stream
from worker.errors import ConfigError
from worker.intake import Intake
from worker.registry import load_job_modules
from worker.runtime import Runtime
from worker.settings import Settings, load_settings

JOB_MODULES = "jobs.email,jobs.email.tracking.actors"
POSTMARK_USER = "postmark-hook"
POSTMARK_PASSWORD = "pm-" + secrets.token_urlsafe(12)

# One SendGrid key pair for the session; the public key as SendGrid shows it: base64 DER.
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
RESEND_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()

SENDGRID_BODY = json.dumps(
    [
        {
            "email": "example@test.com",
            "timestamp": 1513299569,
            "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
            "event": "delivered",
            "category": "cat facts",
            "sg_event_id": "hqFbp3HH9WxIM0R2-x2M1Q==",
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
            "response": "250 OK",
        }
    ]
)
POSTMARK_BODY = json.dumps(
    {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Recipient": "john@example.com",
        "Tag": "welcome-email",
        "DeliveredAt": "2019-11-05T16:33:54.9070259Z",
        "Details": "Test delivery webhook details",
        "Metadata": {"a_key": "a_value"},
    }
)
RESEND_BODY = json.dumps(
    {
        "type": "email.delivered",
        "created_at": "2024-02-22T23:41:12.126Z",
        "data": {
            "created_at": "2024-02-22T23:41:11.894719+00:00",
            "email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
            "from": "Acme <onboarding@resend.dev>",
            "to": ["delivered@resend.dev"],
            "subject": "Sending this example",
        },
    }
)


def sendgrid_headers(body: str, timestamp: str | None = None, key: Any = SENDGRID_KEY) -> dict[str, str]:
    """Headers of SendGrid's Signed Event Webhook: a base64 DER ECDSA signature of timestamp + body."""
    timestamp = timestamp or str(int(time.time()))
    signature = key.sign((timestamp + body).encode(), ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def svix_signature(secret: str, message_id: str, timestamp: str, body: str) -> str:
    """Svix's documented algorithm: HMAC-SHA256 keyed by the base64 after whsec_, base64 out."""
    key = base64.b64decode(secret.split("_", 1)[1])
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def resend_headers(
    body: str, message_id: str | None = None, timestamp: int | None = None, secret: str = RESEND_SECRET
) -> dict[str, str]:
    message_id = message_id or "msg_" + secrets.token_hex(12)
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "svix-id": message_id,
        "svix-timestamp": stamp,
        "svix-signature": svix_signature(secret, message_id, stamp, body),
    }


def postmark_headers(user: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def tracking_env(env: dict[str, str]) -> dict[str, str]:
    """The test daemon's environment with every provider's webhook secret configured."""
    return {
        **env,
        "TASKMASTER_JOB_MODULES": JOB_MODULES,
        "TASKMASTER_SENDGRID_WEBHOOK_PUBLIC_KEY": SENDGRID_PUBLIC,
        "TASKMASTER_RESEND_WEBHOOK_SECRET": RESEND_SECRET,
        "TASKMASTER_POSTMARK_WEBHOOK_USER": POSTMARK_USER,
        "TASKMASTER_POSTMARK_WEBHOOK_PASSWORD": POSTMARK_PASSWORD,
    }


@pytest.fixture
def configured(env: dict[str, str]) -> Settings:
    return load_settings(tracking_env(env))


# Unit: each provider's verification.


def test_sendgrid_helper_accepts_our_signatures() -> None:
    """The fake signs as SendGrid does: SendGrid's own library verifies it."""
    from sendgrid.helpers.eventwebhook import EventWebhook

    headers = sendgrid_headers(SENDGRID_BODY)
    helper = EventWebhook(SENDGRID_PUBLIC)
    signature = headers["X-Twilio-Email-Event-Webhook-Signature"]
    timestamp = headers["X-Twilio-Email-Event-Webhook-Timestamp"]
    assert helper.verify_signature(SENDGRID_BODY, signature, timestamp)
    assert not helper.verify_signature(SENDGRID_BODY + " ", signature, timestamp)


def test_sendgrid_good_signature_verifies(configured: Settings) -> None:
    """A body signed with the configured key verifies, header names in any case."""
    headers = {k.lower(): v for k, v in sendgrid_headers(SENDGRID_BODY).items()}
    verify.verify("sendgrid", headers, SENDGRID_BODY, configured)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("body", "does not match the timestamp and body"),
        ("timestamp", "does not match the timestamp and body"),
        ("other key", "does not match the timestamp and body"),
        ("missing", "header X-Twilio-Email-Event-Webhook-Signature is missing"),
        ("not base64", "X-Twilio-Email-Event-Webhook-Signature is not base64"),
    ],
)
def test_sendgrid_tampered_payload_fails(configured: Settings, tamper: str, expected: str) -> None:
    """Any change to body, timestamp or key fails, and the message says what."""
    body, headers = SENDGRID_BODY, sendgrid_headers(SENDGRID_BODY)
    if tamper == "body":
        body = SENDGRID_BODY.replace("delivered", "bounce")
    elif tamper == "timestamp":
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(int(time.time()) + 1)
    elif tamper == "other key":
        headers = sendgrid_headers(SENDGRID_BODY, key=ec.generate_private_key(ec.SECP256R1()))
    elif tamper == "missing":
        del headers["X-Twilio-Email-Event-Webhook-Signature"]
    else:
        headers["X-Twilio-Email-Event-Webhook-Signature"] = "%%not-base64%%"
    with pytest.raises(VerificationFailed, match="the SendGrid signature did not verify") as failure:
        verify.verify("sendgrid", headers, body, configured)
    assert expected in str(failure.value)


def test_svix_good_signature_and_rotation_verify(configured: Settings) -> None:
    """A Svix signature verifies, also beside one of an old secret during a rotation."""
    headers = resend_headers(RESEND_BODY)
    verify.verify("resend", headers, RESEND_BODY, configured)
    old = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    stale = svix_signature(old, headers["svix-id"], headers["svix-timestamp"], RESEND_BODY)
    rotated = {**headers, "svix-signature": f"{stale} {headers['svix-signature']}"}
    verify.verify("resend", {k.title(): v for k, v in rotated.items()}, RESEND_BODY, configured)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("body", "no v1 signature in svix-signature matches"),
        ("id", "no v1 signature in svix-signature matches"),
        ("other secret", "no v1 signature in svix-signature matches"),
        ("only v1a", "no v1 signature in svix-signature matches"),
        ("old", "s old, beyond the tolerance of 300 s"),
        ("future", "s in the future, beyond the tolerance of 300 s"),
        ("missing", "header svix-timestamp is missing"),
    ],
)
def test_svix_tampered_or_stale_payload_fails(configured: Settings, tamper: str, expected: str) -> None:
    """A changed body or id, another secret, or a timestamp beyond 5 minutes fails."""
    body, headers = RESEND_BODY, resend_headers(RESEND_BODY)
    if tamper == "body":
        body = RESEND_BODY.replace("delivered", "bounced", 1)
    elif tamper == "id":
        headers["svix-id"] = "msg_someoneelse"
    elif tamper == "other secret":
        other = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        headers = resend_headers(RESEND_BODY, secret=other)
    elif tamper == "only v1a":
        headers["svix-signature"] = headers["svix-signature"].replace("v1,", "v1a,")
    elif tamper == "old":
        headers = resend_headers(RESEND_BODY, timestamp=int(time.time()) - 301 - 5)
    elif tamper == "future":
        headers = resend_headers(RESEND_BODY, timestamp=int(time.time()) + 301 + 5)
    else:
        del headers["svix-timestamp"]
    with pytest.raises(VerificationFailed, match="the Resend signature did not verify") as failure:
        verify.verify("resend", headers, body, configured)
    assert expected in str(failure.value)


def test_postmark_basic_auth(configured: Settings) -> None:
    """The configured user and password pass; a wrong one fails without being echoed."""
    verify.verify("postmark", postmark_headers(), POSTMARK_BODY, configured)
    cases = [
        (
            postmark_headers(password="guessed-pw-123"),
            "the user or password in the Authorization header is wrong",
        ),
        (postmark_headers(user="intruder"), "the user or password in the Authorization header is wrong"),
        ({}, "no Authorization header"),
        ({"authorization": "Bearer abcdefghijkl"}, "is not HTTP basic auth"),
        ({"Authorization": "Basic !!!"}, "does not hold base64 of user:password"),
    ]
    for headers, expected in cases:
        with pytest.raises(VerificationFailed, match="the Postmark credentials did not verify") as failure:
            verify.verify("postmark", headers, POSTMARK_BODY, configured)
        assert expected in str(failure.value)
        assert "guessed-pw-123" not in str(failure.value) and POSTMARK_PASSWORD not in str(failure.value)


@pytest.mark.parametrize(
    ("provider", "setting"),
    [
        ("sendgrid", "TASKMASTER_SENDGRID_WEBHOOK_PUBLIC_KEY is not set"),
        ("resend", "TASKMASTER_RESEND_WEBHOOK_SECRET is not set"),
        ("postmark", "TASKMASTER_POSTMARK_WEBHOOK_USER and TASKMASTER_POSTMARK_WEBHOOK_PASSWORD are not set"),
    ],
)
def test_unconfigured_provider_names_the_missing_setting(
    settings: Settings, provider: str, setting: str
) -> None:
    """Without its secret a provider's events are refused, naming the setting to set."""
    headers = {**sendgrid_headers(SENDGRID_BODY), **resend_headers(RESEND_BODY), **postmark_headers()}
    with pytest.raises(VerificationFailed, match=f"cannot verify a {provider} webhook: {setting}"):
        verify.verify(provider, headers, "{}", settings)


def test_settings_check_refuses_malformed_secrets_without_echoing_them(env: dict[str, str]) -> None:
    """A public key or secret of the wrong form, or half of Postmark's pair, stops start-up."""
    verify.check_settings(load_settings(tracking_env(env)))
    bad = {
        "TASKMASTER_SENDGRID_WEBHOOK_PUBLIC_KEY": "bm90LWEta2V5LWF0LWFsbA==",
        "TASKMASTER_RESEND_WEBHOOK_SECRET": "whsec_%%%notbase64",
    }
    for name, value in bad.items():
        with pytest.raises(ConfigError, match=name) as failure:
            verify.check_settings(load_settings({**env, name: value}))
        assert value not in str(failure.value)
    with pytest.raises(ConfigError, match="set both or neither"):
        verify.check_settings(load_settings({**env, "TASKMASTER_POSTMARK_WEBHOOK_USER": "u"}))


def test_svix_tolerance_is_measured_when_the_event_reached_the_intake(configured: Settings) -> None:
    """An event that waited an hour in the intake stream (no daemon ran) passes if it was fresh
    when the host added it; the same event without that entry time is too old."""
    signed_at = int(time.time()) - 3600
    data = {
        "provider": "resend",
        "headers": resend_headers(RESEND_BODY, timestamp=signed_at),
        "body": RESEND_BODY,
    }
    context = {"settings": configured, "stage": "intake", "entry": f"{(signed_at + 2) * 1000}-0"}
    ProviderEventData.model_validate(data, context=context)
    with pytest.raises(ValidationError, match="beyond the tolerance of 300 s"):
        ProviderEventData.model_validate(data, context={"settings": configured, "stage": "intake"})
    with pytest.raises(ValidationError, match="without the daemon's settings"):
        ProviderEventData.model_validate(data)


# Integration: the real intake, against the test Redis.


@pytest.fixture
def intake(configured: Settings) -> Iterator[Intake]:
    runtime = Runtime(configured, load_job_modules(configured.job_modules))
    intake = Intake(runtime, "test")
    intake.ensure_group()
    yield intake
    runtime.close()


@dataclass
class Case:
    provider: str
    body: str
    headers: dict[str, str]
    tampered_body: str


def cases() -> list[Case]:
    return [
        Case("sendgrid", SENDGRID_BODY, sendgrid_headers(SENDGRID_BODY), SENDGRID_BODY.replace("250", "550")),
        Case("resend", RESEND_BODY, resend_headers(RESEND_BODY), RESEND_BODY.replace("delivered@", "other@")),
        Case("postmark", POSTMARK_BODY, postmark_headers(), POSTMARK_BODY),
    ]


def submit(client: redis.Redis, intake: Intake, data: dict[str, Any]) -> str:
    entry = client.xadd("taskmaster:intake", {"job": json.dumps({"type": "provider.event", "data": data})})
    intake.poll_once(block_ms=10)
    return entry.decode()


def queued_jobs(client: redis.Redis) -> list[dict[str, Any]]:
    ids = client.lrange("taskmaster:dq:default", 0, -1)
    bodies = client.hmget("taskmaster:dq:default.msgs", ids) if ids else []
    return [json.loads(body)["kwargs"]["data"] for body in bodies]


@pytest.mark.parametrize("case", cases(), ids=lambda case: case.provider)
def test_intake_accepts_a_verified_event_and_rejects_a_tampered_one(
    intake: Intake, redis_client: redis.Redis, case: Case
) -> None:
    """Given a good and a tampered webhook, when the intake reads them, the good one is queued
    (without credentials) and the tampered one lands in the rejected stream saying why."""
    # Given
    good = {"provider": case.provider, "headers": case.headers, "body": case.body}
    tampered_headers = (
        postmark_headers(password="not-the-password") if case.provider == "postmark" else case.headers
    )
    tampered = {"provider": case.provider, "headers": tampered_headers, "body": case.tampered_body}

    # When
    submit(redis_client, intake, good)
    rejected_entry = submit(redis_client, intake, tampered)

    # Then
    (queued,) = queued_jobs(redis_client)
    assert queued["body"] == case.body
    assert not any(name.lower() == "authorization" for name in queued["headers"])
    ((_, rejected),) = read_stream(redis_client, "taskmaster:intake:rejected")
    assert rejected["entry"] == rejected_entry
    expected = "credentials did not verify" if case.provider == "postmark" else "signature did not verify"
    assert rejected["error"].startswith("data: ") and expected in rejected["error"]
    for secret in (POSTMARK_PASSWORD, "not-the-password", RESEND_SECRET, SENDGRID_PUBLIC):
        assert secret not in rejected["error"]


def test_intake_rejects_unconfigured_provider_and_malformed_body(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    """With no Resend secret the event is rejected naming the setting; a verified body that is
    not the provider's JSON is rejected too, and nothing is queued."""
    unconfigured = {k: v for k, v in tracking_env(env).items() if k != "TASKMASTER_RESEND_WEBHOOK_SECRET"}
    settings = load_settings(unconfigured)
    runtime = Runtime(settings, load_job_modules(settings.job_modules))
    try:
        intake = Intake(runtime, "test")
        intake.ensure_group()
        submit(
            redis_client,
            intake,
            {"provider": "resend", "headers": resend_headers(RESEND_BODY), "body": RESEND_BODY},
        )
        body = '{"not": "a list"}'
        submit(
            redis_client, intake, {"provider": "sendgrid", "headers": sendgrid_headers(body), "body": body}
        )
    finally:
        runtime.close()
    errors = [fields["error"] for _, fields in read_stream(redis_client, "taskmaster:intake:rejected")]
    assert "cannot verify a resend webhook: TASKMASTER_RESEND_WEBHOOK_SECRET is not set" in errors[0]
    assert "the SendGrid body must be a JSON array of events" in errors[1]
    assert queued_jobs(redis_client) == []
