"""The Standard Webhooks signature (https://www.standardwebhooks.com, spec 1.0.0).

Symmetric scheme only: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the
base64-decoded secret after its ``whsec_`` prefix. Written on the standard library's ``hmac``
rather than with the reference ``standardwebhooks`` package: signing is four lines, and the
package adds nothing we need (its value is verification, which is the receiver's side).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"
# The spec: "Random. At least 24 bytes (192 bits, 512 maximum)".
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
SIGNATURE_VERSION = "v1"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError (never echoing it) when malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX!r} followed by the base64 of the key")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        # Unpadded base64 is common in the wild; the reference libraries accept it too.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after {SECRET_PREFIX!r} is not valid base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"the key must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, got {len(key)}")
    return key


def sign(secret: str, webhook_id: str, timestamp_s: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``{webhook_id}.{timestamp_s}.{body}``."""
    signed = f"{webhook_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_header(secrets: Iterable[str], webhook_id: str, timestamp_s: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated (zero-downtime
    rotation: the receiver accepts the delivery when any one verifies)."""
    signatures = [sign(secret, webhook_id, timestamp_s, body) for secret in dict.fromkeys(secrets)]
    if not signatures:
        raise ValueError("at least one secret is needed to sign")
    return " ".join(signatures)


def signed_headers(secrets: Iterable[str], webhook_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt: a fresh timestamp each time, the same ``webhook-id`` always."""
    if "." in webhook_id:
        # The spec: ids must not contain "." or the signed content would be ambiguous.
        raise ValueError("a webhook id must not contain '.'")
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature_header(secrets, webhook_id, timestamp_s, body),
    }


def webhook_id_for(message_id: str) -> str:
    """A stable ``webhook-id`` for a notification: redoing it yields the same id, which receivers
    use as their idempotency key. Hex only, so the id never contains "." nor looks like a secret."""
    return "msg_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]
