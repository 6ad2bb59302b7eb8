"""What went wrong with a push, and how FCM HTTP v1 error responses map onto it.

FCM answers an error with a Google API error body (firebase.google.com/docs/cloud-messaging/
error-codes)::

    {"error": {"code": 404, "message": "...", "status": "NOT_FOUND",
               "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                            "errorCode": "UNREGISTERED"}]}}

``status`` is Google's canonical code; the FCM-specific code is ``details[].errorCode``
(reference/fcm/rest/v1/ErrorCode). The decisions below follow that page's resolution steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from worker.errors import TaskmasterError

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
# QUOTA_EXCEEDED without Retry-After: the per-project quota "is refilled in the following
# minute" (FCM throttling and quotas), so trying sooner only spends another request.
QUOTA_DEFAULT_DELAY_S = 60.0
_MAX_DETAIL_CHARS = 200


class PushError(TaskmasterError):
    """Root of the push capability's errors."""


class PushUnavailable(PushError):
    """The push channel is not configured (a setting is missing or its file is unusable)."""


@dataclass(frozen=True)
class FcmFailure:
    """One error answer of FCM, reduced to what the decisions need."""

    http_status: int
    status: str  # Google's canonical status, e.g. NOT_FOUND, UNAUTHENTICATED
    error_code: str | None  # FCM's errorCode from the details, e.g. UNREGISTERED
    message: str
    retry_after_s: float | None = None

    @property
    def code(self) -> str:
        """The most specific code there is, for events and logs."""
        return self.error_code or self.status or f"HTTP_{self.http_status}"


class FcmError(PushError):
    """FCM refused or could not take one message."""

    def __init__(self, message: str, failure: FcmFailure | None = None) -> None:
        super().__init__(message)
        self.failure = failure

    @property
    def code(self) -> str:
        return self.failure.code if self.failure is not None else type(self).__name__


class TokenUnregistered(FcmError):
    """UNREGISTERED (404): the app instance is gone; the token will never work again."""


class MessageRejected(FcmError):
    """This message to this token can never succeed: retrying sends the same refusal.

    INVALID_ARGUMENT (400), SENDER_ID_MISMATCH (403), THIRD_PARTY_AUTH_ERROR (401: the APNs
    certificate or web push key of the app), and any other client error.
    """


class FcmTransient(FcmError):
    """Worth trying again later: UNAVAILABLE (503), INTERNAL (500), QUOTA_EXCEEDED (429)."""

    @property
    def retry_after_s(self) -> float | None:
        return self.failure.retry_after_s if self.failure is not None else None


class FcmUnreachable(FcmTransient):
    """No answer from FCM or from the token endpoint: every other token would fare the same."""


class FcmAuthError(FcmError):
    """Our own credentials were refused (token endpoint, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED).

    It concerns the whole channel, not one token; an operator fixing the service account
    makes it pass, so the job is retried with backoff rather than failed at once.
    """


def parse_failure(http_status: int, body: bytes, retry_after: str | None) -> FcmFailure:
    """Read an error answer; a body that is not Google's JSON (a proxy's HTML page) still classifies."""
    status, error_code, message = "", None, ""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict):
        status = str(error.get("status") or "")
        message = str(error.get("message") or "")
        for detail in error.get("details") or ():
            if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
                error_code = str(detail.get("errorCode") or "") or None
    return FcmFailure(
        http_status=http_status,
        status=status,
        error_code=error_code,
        message=message[:_MAX_DETAIL_CHARS],
        retry_after_s=parse_retry_after(retry_after),
    )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delay-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def is_expired_access_token(failure: FcmFailure) -> bool:
    """401 without an FCM errorCode: Google refused our bearer token (expired or revoked).

    THIRD_PARTY_AUTH_ERROR is a 401 UNAUTHENTICATED too, but about the app's APNs or web push
    credentials: a fresh access token would not change its answer.
    """
    return failure.http_status == 401 and failure.error_code is None


def classify(failure: FcmFailure) -> FcmError:
    """The error to raise for an FCM error answer."""
    text = f"FCM refused the message: {failure.code} (HTTP {failure.http_status})"
    if failure.message:
        text += f": {failure.message}"
    code = failure.error_code
    if code == "UNREGISTERED":
        return TokenUnregistered(text, failure)
    if code == "QUOTA_EXCEEDED" or failure.http_status == 429:
        delay_s = failure.retry_after_s if failure.retry_after_s is not None else QUOTA_DEFAULT_DELAY_S
        return FcmTransient(text, _with_delay(failure, delay_s))
    if code in ("UNAVAILABLE", "INTERNAL") or failure.http_status >= 500:
        return FcmTransient(text, failure)
    if code in ("INVALID_ARGUMENT", "SENDER_ID_MISMATCH", "THIRD_PARTY_AUTH_ERROR"):
        return MessageRejected(text, failure)
    if failure.http_status in (401, 403):
        # No FCM errorCode: the project or the service account is refused, for every token.
        return FcmAuthError(text, failure)
    return MessageRejected(text, failure)


def _with_delay(failure: FcmFailure, delay_s: float) -> FcmFailure:
    return FcmFailure(failure.http_status, failure.status, failure.error_code, failure.message, delay_s)
