"""Standard Webhooks signatures, checked by a verifier written here from the specification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time

import pytest
from pydantic import ValidationError

from jobs.webhooks.models import EndpointUpsert
from jobs.webhooks.signing import sign, signature_header, signed_headers, webhook_id_for
from worker.registry import load_job_modules
from worker.settings import load_settings
from worker.validation import Rejection, validate_entry

TOLERANCE_S = 5 * 60


class Unverified(Exception):
    """The verifier refused a webhook."""


def verify(secret: str, headers: dict[str, str], body: bytes, *, now_s: float | None = None) -> None:
    """A receiver's check, from spec/standard-webhooks.md ("Verifying signatures") only.

    Deliberately independent of jobs.webhooks.signing: the three headers are required, the
    timestamp must be within 5 minutes, the key is the base64 after "whsec_", the signed content
    is "{id}.{timestamp}.{body}", the header is a space-separated list of "v1,<base64>" entries,
    and one match (compared in constant time) is enough.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id, timestamp, signatures = (
        lowered.get("webhook-id"),
        lowered.get("webhook-timestamp"),
        lowered.get("webhook-signature"),
    )
    if not (msg_id and timestamp and signatures):
        raise Unverified("missing headers")
    now = time.time() if now_s is None else now_s
    if abs(now - int(timestamp)) > TOLERANCE_S:
        raise Unverified("timestamp outside the tolerance")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    for entry in signatures.split(" "):
        version, _, encoded = entry.partition(",")
        if version == "v1" and hmac.compare_digest(base64.b64decode(encoded), expected):
            return
    raise Unverified("no matching signature")


def new_secret(size: int = 24) -> str:
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


def test_signature_matches_the_reference_libraries_test_vector() -> None:
    """The signature of the standard-webhooks reference libraries' published vector is reproduced."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": signature,
    }
    verify(secret, headers, body, now_s=1614265330)


def test_signed_headers_verify_and_any_change_breaks_them() -> None:
    """Headers verify with the secret; another body, id, timestamp or secret does not."""
    secret = new_secret()
    body = json.dumps({"type": "task.due", "data": {"id": "t1"}}, separators=(",", ":")).encode()
    now = int(time.time())
    headers = signed_headers([secret], "msg_abc", now, body)
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"] == "msg_abc" and headers["webhook-timestamp"] == str(now)
    verify(secret, headers, body)
    with pytest.raises(Unverified):
        verify(secret, headers, body + b" ")
    with pytest.raises(Unverified):
        verify(secret, {**headers, "webhook-id": "msg_abd"}, body)
    with pytest.raises(Unverified):
        verify(secret, {**headers, "webhook-timestamp": str(now + 1)}, body)
    with pytest.raises(Unverified):
        verify(new_secret(), headers, body)
    with pytest.raises(Unverified):
        verify(secret, headers, body, now_s=now + TOLERANCE_S + 1)


def test_several_secrets_give_space_separated_signatures_each_verifying() -> None:
    """Rotation: one v1 signature per secret, space-separated; either secret alone verifies."""
    old, new = new_secret(), new_secret(32)
    body = b'{"a":1}'
    now = int(time.time())
    headers = signed_headers([new, old], "msg_1", now, body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(old, headers, body)
    verify(new, headers, body)
    # The same secret twice signs once.
    assert len(signature_header([new, new], "msg_1", now, body).split(" ")) == 1


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_not*base64*at*all*here*nope",
        "whsec_" + base64.b64encode(b"x" * 16).decode(),  # too short: the spec says 24 bytes at least
        "whsec_" + base64.b64encode(b"x" * 65).decode(),  # too long: 512 bits at most
    ],
)
def test_malformed_secrets_are_refused_without_being_echoed(secret: str) -> None:
    """A bad secret fails validation, and neither the error nor the intake's rejection shows it."""
    data = {"endpoint_id": "e1", "url": "https://example.com/h", "secret": secret}
    with pytest.raises(ValidationError) as info:
        EndpointUpsert.model_validate(data)
    registry = load_job_modules(["jobs.webhooks"])
    job = json.dumps({"type": "webhook.endpoint.upsert", "data": data}).encode()
    with pytest.raises(Rejection) as rejected:
        validate_entry(job, registry, 65536)
    assert "data.secret:" in str(rejected.value)
    for text in (str(info.value), str(rejected.value)):
        assert secret not in text and secret.removeprefix("whsec_") not in text


def test_the_secret_never_shows_in_a_repr_but_travels_to_the_worker() -> None:
    """The model masks the secret in repr; its JSON form (the job's payload) carries it."""
    secret = new_secret()
    model = EndpointUpsert.model_validate(
        {"endpoint_id": "e1", "url": "https://example.com/h", "secret": secret}
    )
    assert secret not in repr(model) and secret not in str(model)
    assert model.model_dump(mode="json")["secret"] == secret
    # Unpadded base64, as some senders print it, is accepted.
    EndpointUpsert.model_validate(
        {"endpoint_id": "e1", "url": "https://x.example", "secret": secret.rstrip("=")}
    )


def test_urls_must_be_http_and_internal_literals_are_refused_at_intake() -> None:
    """ftp:// is refused; with private targets off, a private IP literal is refused at validation."""
    base = {"endpoint_id": "e1", "secret": new_secret()}
    with pytest.raises(ValidationError, match="http"):
        EndpointUpsert.model_validate({**base, "url": "ftp://example.com/h"})
    strict = {"settings": load_settings({"TASKMASTER_WEBHOOK_ALLOW_PRIVATE": "false"}), "stage": "intake"}
    lenient = {"settings": load_settings({"TASKMASTER_WEBHOOK_ALLOW_PRIVATE": "true"}), "stage": "intake"}
    for url in ("http://10.0.0.1/h", "http://[::ffff:127.0.0.1]:8080/h", "http://169.254.169.254/latest"):
        with pytest.raises(ValidationError, match="address"):
            EndpointUpsert.model_validate({**base, "url": url}, context=strict)
        EndpointUpsert.model_validate({**base, "url": url}, context=lenient)
    # Names are checked when connecting (their addresses can change), not here.
    EndpointUpsert.model_validate({**base, "url": "https://hooks.example.com/h"}, context=strict)


def test_webhook_ids_are_stable_and_safe_to_sign() -> None:
    """The same message gives the same id; ids have no "." and a dotted id is refused."""
    assert webhook_id_for("n-1.2") == webhook_id_for("n-1.2") != webhook_id_for("n-1.3")
    assert webhook_id_for("n-1.2").startswith("msg_") and "." not in webhook_id_for("n-1.2")
    with pytest.raises(ValueError):
        signed_headers([new_secret()], "msg.1", 1, b"{}")
