"""The errors of the email providers, and the one table that classifies every failure.

Every failure a provider meets, an HTTP answer, an SMTP reply or a broken connection, becomes one
``ProviderError`` whose ``kind`` tells the caller what to do with the email:

- ``transient``: the provider could not take it now (timeouts, connection errors, 5xx, 429 with
  its Retry-After): fail over at once and count it against the provider's breaker;
- ``rejected``: the email itself is bad (an invalid address, a bad request): fail that email with
  the provider's reason and try it nowhere else;
- ``auth``: our credentials or our account at that provider are at fault: fail over, and log loudly
  because an operator has to act.

``outcome`` says whether the provider may have accepted the email anyway: ``definite`` when it
certainly did not (nothing was sent, or it answered with an error), ``unknown`` when the request
went out and no answer came back.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from worker.errors import TaskmasterError
from worker.logging import get_logger, redact_text

Kind = Literal["transient", "rejected", "auth"]
Outcome = Literal["definite", "unknown"]


class ProviderError(TaskmasterError):
    """A provider did not take an email; the message never holds a secret."""

    def __init__(
        self,
        provider: str,
        kind: Kind,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
        outcome: Outcome = "definite",
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.kind: Kind = kind
        self.message = message
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s
        self.outcome: Outcome = outcome

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields would be lost by the default pickling of exceptions.
        return (_rebuild, (self.provider, self.kind, self.message, self.status, self.code,
                           self.retry_after_s, self.outcome))  # fmt: skip


def _rebuild(
    provider: str,
    kind: Kind,
    message: str,
    status: int | None,
    code: str | None,
    retry_after_s: float | None,
    outcome: Outcome,
) -> ProviderError:
    return ProviderError(
        provider, kind, message, status=status, code=code, retry_after_s=retry_after_s, outcome=outcome
    )


@dataclass(frozen=True)
class Rule:
    kind: Kind
    # Where the provider documents it, and why this kind.
    why: str
    # A floor for retry_after_s: quotas that reset in hours are not worth a retry in seconds.
    min_retry_after_s: float | None = None
    outcome: Outcome = "definite"


# Pseudo-statuses for failures without an answer, so that they live in the same table.
NOT_SENT = "not-sent"  # refused, unreachable, lost before the email went out: nothing was sent
NO_ANSWER = "no-answer"  # the request went out, then a timeout or a dropped connection
MISCONFIGURED = "misconfigured"  # a bad base URL, TLS that cannot be verified, a missing feature

# (provider, status, provider's error code) -> rule. Lookup order: the status with its code, the
# status with any code, the status class ("4xx", "5xx") with the code, then with any code; then
# the same under "*".
RULES: dict[tuple[str, str, str | None], Rule] = {
    # Every provider: failures without an answer.
    ("*", NOT_SENT, None): Rule("transient", "the email never left: no connection, or lost before it"),
    ("*", NO_ANSWER, None): Rule(
        "transient", "sent, then no answer: the provider may have accepted it", outcome="unknown"
    ),
    ("*", MISCONFIGURED, None): Rule("auth", "our configuration of this provider is wrong"),
    ("*", "429", None): Rule("transient", "rate limited: retry after its Retry-After"),
    ("*", "5xx", None): Rule("transient", "the provider failed; it took nothing"),
    ("*", "401", None): Rule("auth", "credentials missing or refused"),
    ("*", "403", None): Rule("auth", "our key or account may not send this"),
    # Not about this email: a wrong base URL or a client fault would refuse every email alike.
    ("*", "404", None): Rule("auth", "no such endpoint: the base URL is wrong"),
    ("*", "405", None): Rule("auth", "method not allowed: the base URL or the client is wrong"),
    ("*", "415", None): Rule("auth", "unsupported media type: the client is wrong"),
    ("*", "4xx", None): Rule("rejected", "the request for this email is invalid"),
    # SendGrid: POST /v3/mail/send, twilio.com/docs/sendgrid/api-reference/mail-send/errors and
    # .../how-to-use-the-sendgrid-v3-api/errors. No error codes: {"errors": [{message, field, help}]}.
    ("sendgrid", "400", None): Rule("rejected", "mail-send validation errors (field and message)"),
    ("sendgrid", "401", None): Rule("auth", "the authorization grant is invalid, expired, or revoked"),
    ("sendgrid", "403", None): Rule(
        "auth", "unverified sender identity, a key without mail.send, or a block"
    ),
    ("sendgrid", "413", None): Rule("rejected", "the JSON payload is too large (30 MB)"),
    ("sendgrid", "429", None): Rule("transient", "rate limited; X-RateLimit-Reset says when"),
    # Postmark: postmarkapp.com/developer/api/overview#error-codes; 422 carries an ErrorCode.
    ("postmark", "401", None): Rule("auth", "ErrorCode 10: bad or missing server token"),
    ("postmark", "413", None): Rule("rejected", "payload over 10 MB (50 MB for a batch)"),
    ("postmark", "422", None): Rule("rejected", "an API error about this email"),
    ("postmark", "422", "300"): Rule("rejected", "invalid email request (addresses, fields)"),
    ("postmark", "422", "406"): Rule("rejected", "inactive recipient: hard bounce, complaint or suppression"),
    ("postmark", "422", "411"): Rule("rejected", "forbidden attachment type"),
    ("postmark", "422", "400"): Rule("auth", "sender signature not found: our From on this server"),
    ("postmark", "422", "401"): Rule("auth", "sender signature not confirmed"),
    ("postmark", "422", "405"): Rule("auth", "not allowed to send: the account is out of credits"),
    ("postmark", "422", "412"): Rule("auth", "the account is pending approval"),
    ("postmark", "422", "413"): Rule("auth", "the account may not send"),
    ("postmark", "422", "10"): Rule("auth", "bad or missing server token"),
    ("postmark", "422", "402"): Rule("auth", "invalid JSON: our client's fault, not this email's"),
    ("postmark", "422", "409"): Rule("auth", "JSON required (Accept, Content-Type): our client's fault"),
    ("postmark", "429", None): Rule("transient", "rate limit exceeded"),
    ("postmark", "503", None): Rule("transient", "ErrorCode 100: maintenance"),
    # Resend: resend.com/docs/api-reference/errors; {"statusCode", "name", "message"}.
    ("resend", "400", "validation_error"): Rule("rejected", "one or more fields are invalid"),
    ("resend", "400", "invalid_idempotency_key"): Rule("rejected", "the key must be 1-256 characters"),
    ("resend", "401", None): Rule("auth", "missing_api_key, restricted_api_key or an invalid key"),
    ("resend", "403", None): Rule(
        "auth", "invalid_api_key, an unverified domain, test-only sending, or no User-Agent (1010)"
    ),
    ("resend", "409", "invalid_idempotent_request"): Rule(
        "rejected",
        "same key, different payload: an earlier attempt with this key may have been sent",
        outcome="unknown",
    ),
    ("resend", "409", "concurrent_idempotent_requests"): Rule(
        "transient", "the first request with this key is still in progress", 1.0, outcome="unknown"
    ),
    ("resend", "422", None): Rule("rejected", "missing_required_field, invalid_from_address, ..."),
    ("resend", "429", "rate_limit_exceeded"): Rule("transient", "too many requests per second"),
    ("resend", "429", "daily_quota_exceeded"): Rule(
        "transient", "daily sending quota: frees up over 24 hours, not in seconds", 3600.0
    ),
    ("resend", "429", "monthly_quota_exceeded"): Rule(
        "transient", "monthly sending quota: only a plan change or the new month helps", 86400.0
    ),
    ("resend", "451", "security_error"): Rule("rejected", "a security issue found in this request"),
    # SMTP (RFC 5321 4.2.1, RFC 4954): 4yz transient, 5yz permanent, authentication apart.
    ("smtp", "4xx", None): Rule("transient", "transient negative completion: try again later"),
    ("smtp", "454", None): Rule("transient", "temporary authentication failure"),
    ("smtp", "5xx", None): Rule("rejected", "permanent negative completion for this email"),
    ("smtp", "530", None): Rule("auth", "authentication required"),
    ("smtp", "534", None): Rule("auth", "authentication mechanism is too weak"),
    ("smtp", "535", None): Rule("auth", "authentication credentials invalid"),
    ("smtp", "538", None): Rule("auth", "encryption required for the requested authentication"),
    # Code "session": the reply came while opening the session (greeting, EHLO, STARTTLS, AUTH).
    ("smtp", "5xx", "session"): Rule("auth", "the server will not serve us at all: not about this email"),
}


def rule_for(provider: str, status: str, code: str | None = None) -> Rule:
    status_class = f"{status[0]}xx" if status[:1].isdigit() else status
    for who in (provider, "*"):
        keys = (
            (who, status, code),
            (who, status, None),
            (who, status_class, code),
            (who, status_class, None),
        )
        for key in keys:
            rule = RULES.get(key)
            if rule is not None:
                return rule
    return Rule("transient", "not in the table: treated as a passing failure")


def classify(
    provider: str,
    status: int | str,
    message: str,
    *,
    code: str | None = None,
    retry_after_s: float | None = None,
    secrets: tuple[str, ...] = (),
) -> ProviderError:
    """The ProviderError for one failure, from the table."""
    rule = rule_for(provider, str(status), code)
    if rule.min_retry_after_s is not None:
        retry_after_s = max(retry_after_s or 0.0, rule.min_retry_after_s)
    return ProviderError(
        provider,
        rule.kind,
        scrub(message, secrets),
        status=status if isinstance(status, int) else None,
        code=code,
        retry_after_s=retry_after_s if rule.kind == "transient" else None,
        outcome=rule.outcome,
    )


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Drop our own secrets (should a provider echo one back) and anything that looks like one."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return redact_text(text)[:500]


def retry_after_s(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def from_transport(provider: str, exc: BaseException) -> ProviderError:
    """A failure without an answer: requests, urllib (SendGrid's client) or a socket."""
    status = NO_ANSWER
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        # Whatever wraps it (requests, urllib, ssl): a certificate we cannot trust is configuration.
        status = MISCONFIGURED
    elif isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        # No connection, or no TLS session: the request was never written.
        status = NOT_SENT
    elif isinstance(exc, requests.exceptions.ConnectionError):
        # requests wraps both "could not connect" and "connection dropped after sending".
        reason = exc.args[0] if exc.args else None
        inner = reason.reason if isinstance(reason, MaxRetryError) else reason
        if isinstance(inner, NewConnectionError | ConnectTimeoutError):
            status = NOT_SENT
    elif isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        status = MISCONFIGURED
    elif isinstance(exc, urllib.error.URLError | ConnectionRefusedError | socket.gaierror):
        # urllib raises URLError only while connecting and sending; later failures come bare.
        status = NOT_SENT
    elif not isinstance(exc, OSError | http.client.HTTPException | requests.exceptions.RequestException):
        raise TypeError(f"not a transport failure: {exc!r}")
    what = {NOT_SENT: "not sent", NO_ANSWER: "no answer", MISCONFIGURED: "misconfigured"}
    return classify(provider, status, f"{what[status]}: {type(exc).__name__}: {exc}")


def log_failure(error: ProviderError) -> None:
    """Auth failures need an operator: logged as errors. The rest is the caller's to report."""
    # A logger per call: it follows the logging configuration of the moment (and tests capture it).
    log = get_logger(__name__)
    fields = {
        "provider": error.provider,
        "kind": error.kind,
        "status": error.status,
        "code": error.code,
        "outcome": error.outcome,
        "reason": error.message,
    }
    if error.kind == "auth":
        log.error("email provider refused our credentials or account", **fields)
    elif error.kind == "transient":
        log.warning("email provider failed", retry_after_s=error.retry_after_s, **fields)
    else:
        log.info("email provider rejected the email", **fields)
