"""Verifying a provider's webhook exactly as the provider documents it.

- SendGrid, the Signed Event Webhook ("Getting Started with the Event Webhook Security
  Features", twilio.com/docs/sendgrid): ECDSA P-256 with SHA-256 over the
  ``X-Twilio-Email-Event-Webhook-Timestamp`` header followed by the raw body; the signature is
  base64 DER in ``X-Twilio-Email-Event-Webhook-Signature``; the key is shown in SendGrid's Mail
  Settings as base64 DER (SubjectPublicKeyInfo). The ``sendgrid`` library's ``EventWebhook``
  helper makes the same `cryptography` call, but it is untyped, wants the key wrapped in PEM by
  hand and lets a malformed signature escape as a base64 error, so the call is made here.
  SendGrid documents no timestamp tolerance and retries failed posts for a day: replays are
  stopped by the dedupe on ``sg_event_id`` instead.
- Resend, through Svix ("Verifying Webhooks Manually", docs.svix.com): HMAC-SHA256 keyed with
  the base64 part of the ``whsec_`` secret over ``{svix-id}.{svix-timestamp}.{body}``,
  base64, compared with each space-separated ``v1,<signature>`` of ``svix-signature`` (several
  during a secret rotation); a timestamp more than 5 minutes from now is refused. Written by
  hand because the ``svix`` package is not a dependency and this is the whole algorithm.
- Postmark signs nothing: its webhooks carry HTTP basic auth credentials configured with the
  webhook ("Webhooks overview", postmarkapp.com/developer), compared here in constant time.

Every failure raises VerificationFailed with a message that says what did not verify and
why, and never contains a secret or the credentials given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from pydantic import SecretStr

from jobs.email.tracking.errors import VerificationFailed
from worker.errors import ConfigError
from worker.settings import Settings

# Looked up lower-cased (header_map); named in messages as the provider spells them.
SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
SVIX_ID = "svix-id"
SVIX_TIMESTAMP = "svix-timestamp"
SVIX_SIGNATURE = "svix-signature"
SVIX_TOLERANCE_S = 300.0
SVIX_SECRET_PREFIX = "whsec_"

SENDGRID_KEY_SETTING = "TASKMASTER_SENDGRID_WEBHOOK_PUBLIC_KEY"
RESEND_SECRET_SETTING = "TASKMASTER_RESEND_WEBHOOK_SECRET"
POSTMARK_USER_SETTING = "TASKMASTER_POSTMARK_WEBHOOK_USER"
POSTMARK_PASSWORD_SETTING = "TASKMASTER_POSTMARK_WEBHOOK_PASSWORD"

T = TypeVar("T")


def header_map(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers by lower-cased name (HTTP names are case-insensitive)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in out and out[key] != value:
            raise VerificationFailed(f"header {key!r} is given twice with different values")
        out[key] = value
    return out


def verify(
    provider: str, headers: Mapping[str, str], body: str, settings: Settings, *, now_s: float | None = None
) -> None:
    """Raise VerificationFailed unless ``body`` provably comes from ``provider``."""
    named = header_map(headers)
    if provider == "sendgrid":
        public_key = _value(settings.sendgrid_webhook_public_key)
        if public_key is None:
            raise VerificationFailed(_missing(provider, SENDGRID_KEY_SETTING))
        verify_sendgrid(named, body, _configured(sendgrid_public_key, public_key))
    elif provider == "resend":
        secret = _value(settings.resend_webhook_secret)
        if secret is None:
            raise VerificationFailed(_missing(provider, RESEND_SECRET_SETTING))
        key = _configured(svix_key, secret)
        verify_svix(named, body, key, now_s=time.time() if now_s is None else now_s)
    elif provider == "postmark":
        user, password = _value(settings.postmark_webhook_user), _value(settings.postmark_webhook_password)
        if user is None or password is None:
            unset = [POSTMARK_USER_SETTING] if user is None else []
            unset += [POSTMARK_PASSWORD_SETTING] if password is None else []
            raise VerificationFailed(_missing(provider, " and ".join(unset)))
        verify_postmark(named, user, password)
    else:
        raise VerificationFailed(f"unknown provider {provider!r}")


def verify_sendgrid(headers: Mapping[str, str], body: str, key: ec.EllipticCurvePublicKey) -> None:
    failed = "the SendGrid signature did not verify"
    signature_b64 = _required(headers, SENDGRID_SIGNATURE, failed)
    timestamp = _required(headers, SENDGRID_TIMESTAMP, failed)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except binascii.Error:
        raise VerificationFailed(f"{failed}: header {SENDGRID_SIGNATURE} is not base64") from None
    try:
        key.verify(signature, (timestamp + body).encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VerificationFailed(
            f"{failed}: the signature does not match the timestamp and body (the body or timestamp"
            f" was changed, or it was signed with another key than {SENDGRID_KEY_SETTING})"
        ) from None


def verify_svix(
    headers: Mapping[str, str], body: str, key: bytes, *, now_s: float, tolerance_s: float = SVIX_TOLERANCE_S
) -> None:
    failed = "the Resend signature did not verify"
    message_id = _required(headers, SVIX_ID, failed)
    timestamp = _required(headers, SVIX_TIMESTAMP, failed)
    signatures = _required(headers, SVIX_SIGNATURE, failed)
    try:
        skew_s = now_s - int(timestamp)
    except ValueError:
        raise VerificationFailed(f"{failed}: {SVIX_TIMESTAMP} is not a whole number of seconds") from None
    if abs(skew_s) > tolerance_s:
        when = "old" if skew_s > 0 else "in the future"
        raise VerificationFailed(
            f"{failed}: {SVIX_TIMESTAMP} is {abs(skew_s):.0f} s {when}, beyond the tolerance of"
            f" {tolerance_s:.0f} s (a replayed or late request, or a wrong clock)"
        )
    expected = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue  # other schemes (v1a: asymmetric) are not what Resend's secret signs
        try:
            candidate = base64.b64decode(value, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected, candidate):
            return
    raise VerificationFailed(
        f"{failed}: no v1 signature in {SVIX_SIGNATURE} matches the id, timestamp and body (the body"
        f" was changed, or it was signed with another secret than {RESEND_SECRET_SETTING})"
    )


def verify_postmark(headers: Mapping[str, str], user: str, password: str) -> None:
    failed = "the Postmark credentials did not verify"
    authorization = headers.get("authorization")
    if not authorization:
        raise VerificationFailed(
            f"{failed}: no Authorization header (give the webhook basic auth credentials in Postmark"
            " and forward the header)"
        )
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise VerificationFailed(f"{failed}: the Authorization header is not HTTP basic auth")
    try:
        given = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise VerificationFailed(
            f"{failed}: the Authorization header does not hold base64 of user:password"
        ) from None
    given_user, colon, given_password = given.partition(":")
    # Both compared whatever the first gives, so timing tells nothing about which was wrong.
    user_ok = hmac.compare_digest(given_user.encode(), user.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    if not (colon and user_ok and password_ok):
        raise VerificationFailed(f"{failed}: the user or password in the Authorization header is wrong")


@lru_cache(maxsize=4)
def sendgrid_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The key as SendGrid shows it (base64 DER SubjectPublicKeyInfo); PEM is accepted too."""
    problem = f"{SENDGRID_KEY_SETTING} is not a P-256 public key in base64 DER, as SendGrid shows it"
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = load_pem_public_key(text.strip().encode())
        else:
            key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error):
        raise ValueError(problem) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(problem)
    return key


def svix_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` signing secret."""
    try:
        key = base64.b64decode(secret.strip().removeprefix(SVIX_SECRET_PREFIX), validate=True)
    except binascii.Error:
        key = b""
    if not key:
        raise ValueError(f"{RESEND_SECRET_SETTING} is not a signing secret like whsec_<base64>")
    return key


def check_settings(settings: Settings) -> None:
    """Start-up check: a configured webhook secret has the documented form (ConfigError)."""
    try:
        public_key = _value(settings.sendgrid_webhook_public_key)
        if public_key is not None:
            sendgrid_public_key(public_key)
        secret = _value(settings.resend_webhook_secret)
        if secret is not None:
            svix_key(secret)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if (_value(settings.postmark_webhook_user) is None) != (
        _value(settings.postmark_webhook_password) is None
    ):
        raise ConfigError(
            f"{POSTMARK_USER_SETTING} and {POSTMARK_PASSWORD_SETTING} go together: set both or neither"
        )


def _value(setting: SecretStr | str | None) -> str | None:
    """A setting's text; an empty one counts as unset, as an empty environment variable means."""
    text = setting.get_secret_value() if isinstance(setting, SecretStr) else setting
    return text if text and text.strip() else None


def _configured(load: Callable[[str], T], value: str) -> T:
    try:
        return load(value)
    except ValueError as exc:
        raise VerificationFailed(f"cannot verify the webhook: {exc}") from None


def _missing(provider: str, settings: str) -> str:
    verb = "are" if " and " in settings else "is"
    return f"cannot verify a {provider} webhook: {settings} {verb} not set"


def _required(headers: Mapping[str, str], name: str, failed: str) -> str:
    value = headers.get(name.lower())
    if not value:
        raise VerificationFailed(f"{failed}: header {name} is missing")
    return value
