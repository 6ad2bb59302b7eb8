"""SendGrid: ``POST /v3/mail/send`` through the official ``sendgrid`` library.

SendGrid answers 202 with an empty body; the only handle on the message is the ``X-Message-Id``
header. It takes no idempotency key, so the delivery id goes into ``custom_args``, which SendGrid
returns at the top level of every event of that message; the stable Message-ID header travels
too. A batch is one request per email: personalizations share one body, and the emails of a
batch each have their own.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import python_http_client  # type: ignore[import-untyped]
import sendgrid  # type: ignore[import-untyped]
from sendgrid.helpers.mail import (  # type: ignore[import-untyped]
    Bcc,
    Cc,
    Content,
    CustomArg,
    From,
    Header,
    Mail,
    MimeType,
    Personalization,
    ReplyTo,
    SendGridException,
    To,
)

from jobs.email.message import Outgoing
from jobs.email.providers.base import Address, BatchItem, MessageParts, SendResult, parts_of, send_each
from jobs.email.providers.errors import ProviderError, classify, from_transport, log_failure, retry_after_s

# The custom_args key of our delivery id; it comes back in every event webhook post.
DELIVERY_ID_ARG = "delivery_id"

# At DEBUG the library's HTTP client logs every request's headers and whole body (the recipients
# and the email); our own log lines say what happened without them.
logging.getLogger("python_http_client").setLevel(logging.INFO)


class SendGridProvider:
    name = "sendgrid"
    max_batch = 1

    def __init__(self, api_key: str, *, base_url: str, timeout_s: float) -> None:
        self._api_key = api_key
        self._client = sendgrid.SendGridAPIClient(api_key, host=base_url.rstrip("/"))
        # The library has no timeout parameter; its HTTP client passes this one to every request.
        self._client.client.timeout = timeout_s

    def send(self, message: Outgoing, *, idempotency_key: str, envelope_to: list[str]) -> SendResult:
        parts = parts_of(message, envelope_to)
        try:
            mail = build_mail(parts, idempotency_key)
            response = self._client.send(mail)
        except python_http_client.exceptions.HTTPError as exc:
            error = self._answered(exc)
            log_failure(error)
            raise error from exc
        except SendGridException as exc:
            error = classify(self.name, 400, f"refused by the sendgrid library: {type(exc).__name__}")
            log_failure(error)
            raise error from exc
        except (OSError, http.client.HTTPException) as exc:
            error = from_transport(self.name, exc)
            log_failure(error)
            raise error from exc
        message_id = response.headers.get("X-Message-Id") or parts.message_id
        return SendResult(self.name, message_id)

    def send_batch(self, items: Sequence[BatchItem]) -> list[SendResult | ProviderError]:
        return send_each(self.send, items)

    def close(self) -> None:
        """Nothing held open: the library opens and closes a connection per request."""

    def _answered(self, exc: Any) -> ProviderError:
        status = int(exc.status_code)
        headers = exc.headers
        wait_s = retry_after_s(headers.get("Retry-After")) if headers is not None else None
        reset = headers.get("X-RateLimit-Reset") if headers is not None else None
        if wait_s is None and reset and reset.isdigit():
            # SendGrid's rate limit answers carry the reset time as a Unix timestamp.
            wait_s = max(0.0, int(reset) - time.time())
        return classify(
            self.name,
            status,
            f"{status}: {describe_errors(exc.body)}",
            retry_after_s=wait_s,
            secrets=(self._api_key,),
        )


def build_mail(parts: MessageParts, idempotency_key: str) -> Mail:
    """The mail/send body: one personalization, text/plain before text/html as SendGrid requires."""
    mail = Mail(from_email=_email(From, parts.sender), subject=parts.subject)
    personalization = Personalization()
    for address in parts.to:
        personalization.add_to(_email(To, address))
    for address in parts.cc:
        personalization.add_cc(_email(Cc, address))
    for address in parts.bcc:
        personalization.add_bcc(_email(Bcc, address))
    mail.add_personalization(personalization)
    if parts.text is not None:
        mail.add_content(Content(MimeType.text, parts.text))
    if parts.html is not None:
        mail.add_content(Content(MimeType.html, parts.html))
    if parts.reply_to:
        mail.reply_to = _email(ReplyTo, parts.reply_to[0])
    for name, value in parts.headers.items():
        mail.add_header(Header(name, value))
    mail.add_custom_arg(CustomArg(DELIVERY_ID_ARG, idempotency_key))
    return mail


def _email(kind: Any, address: Address) -> Any:
    """Set the fields as they are: the helper's own parsing drops an address without "@", and
    SendGrid, not the library, should be the one to refuse it."""
    email = kind()
    email.email = address.email
    if address.name:
        email.name = address.name
    return email


def describe_errors(body: bytes | None) -> str:
    """SendGrid's ``{"errors": [{"message", "field", "help"}]}`` as one line."""
    try:
        errors = json.loads(body or b"{}").get("errors") or []
    except (ValueError, AttributeError):
        return (body or b"").decode("utf-8", "replace")[:200] or "no details"
    described = [
        f"{error.get('field')}: {error.get('message')}" if error.get("field") else str(error.get("message"))
        for error in errors
        if isinstance(error, dict)
    ]
    return "; ".join(described) or "no details"
