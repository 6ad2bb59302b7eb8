"""Postmark: ``POST /email`` and ``POST /email/batch`` (up to 500 messages) with requests.

Postmark answers 200 with ``ErrorCode`` 0 and a ``MessageID``, 422 with an ``ErrorCode`` for an
email it refuses, 401 for a bad server token; the batch endpoint answers 200 with one such result
per message, in order (postmarkapp.com/developer/api/email-api). Postmark takes no idempotency
key: the delivery id goes into ``Metadata``, returned with every webhook event, and the stable
Message-ID header goes along so that a retry after an unknown outcome is recognisable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import requests

from jobs.email.message import Outgoing
from jobs.email.providers.base import (
    USER_AGENT,
    BatchItem,
    MessageParts,
    SendResult,
    SessionPerThread,
    chunks,
    json_body,
    parts_of,
)
from jobs.email.providers.errors import (
    NO_ANSWER,
    ProviderError,
    classify,
    log_failure,
    retry_after_s,
)

METADATA_KEY = "delivery_id"
# Postmark caps a metadata value at 80 characters.
METADATA_VALUE_MAX = 80


class PostmarkProvider:
    name = "postmark"
    max_batch = 500

    def __init__(
        self, server_token: str, *, base_url: str, timeout_s: float, message_stream: str = "outbound"
    ) -> None:
        self._token = server_token
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._stream = message_stream
        self._sessions = SessionPerThread(
            {
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "X-Postmark-Server-Token": server_token,
            }
        )

    def send(self, message: Outgoing, *, idempotency_key: str, envelope_to: list[str]) -> SendResult:
        payload = self._payload(parts_of(message, envelope_to), idempotency_key)
        response = self._sessions.post_json(
            self.name, f"{self._base_url}/email", payload, timeout_s=self._timeout_s
        )
        body = json_body(response)
        if response.status_code == 200 and isinstance(body, dict) and body.get("ErrorCode") == 0:
            return SendResult(self.name, str(body.get("MessageID", "")))
        error = self._error(response.status_code, body, response)
        log_failure(error)
        raise error

    def send_batch(self, items: Sequence[BatchItem]) -> list[SendResult | ProviderError]:
        results: list[SendResult | ProviderError] = []
        for chunk in chunks(items, self.max_batch):
            results.extend(self._send_chunk(chunk))
        return results

    def close(self) -> None:
        self._sessions.close()

    def _send_chunk(self, items: Sequence[BatchItem]) -> list[SendResult | ProviderError]:
        payload = [self._payload(parts_of(i.message, i.envelope_to), i.idempotency_key) for i in items]
        try:
            response = self._sessions.post_json(
                self.name, f"{self._base_url}/email/batch", payload, timeout_s=self._timeout_s
            )
        except ProviderError as exc:
            return [exc] * len(items)
        body = json_body(response)
        if response.status_code != 200:
            error = self._error(response.status_code, body, response)
            log_failure(error)
            return [error] * len(items)
        if not isinstance(body, list) or len(body) != len(items):
            # Postmark promises one result per message; without that, any of them may have gone.
            error = classify(self.name, NO_ANSWER, "the batch answer does not match the batch")
            log_failure(error)
            return [error] * len(items)
        results: list[SendResult | ProviderError] = []
        for result in body:
            if isinstance(result, dict) and result.get("ErrorCode") == 0:
                results.append(SendResult(self.name, str(result.get("MessageID", ""))))
            else:
                # The batch answers 200 overall; each refused message carries a 422-style ErrorCode.
                error = self._error(422, result, None)
                log_failure(error)
                results.append(error)
        return results

    def _payload(self, parts: MessageParts, idempotency_key: str) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "From": parts.sender.formatted(),
            "To": ", ".join(a.formatted() for a in parts.to),
            "Subject": parts.subject,
            "MessageStream": self._stream,
            "Metadata": {METADATA_KEY: metadata_value(idempotency_key)},
        }
        for field, addresses in (("Cc", parts.cc), ("Bcc", parts.bcc), ("ReplyTo", parts.reply_to)):
            if addresses:
                payload[field] = ", ".join(a.formatted() for a in addresses)
        if parts.text is not None:
            payload["TextBody"] = parts.text
        if parts.html is not None:
            payload["HtmlBody"] = parts.html
        if parts.headers:
            payload["Headers"] = [{"Name": name, "Value": value} for name, value in parts.headers.items()]
        return payload

    def _error(self, status: int, body: Any, response: requests.Response | None) -> ProviderError:
        code = body.get("ErrorCode") if isinstance(body, dict) else None
        message = body.get("Message") if isinstance(body, dict) else None
        if message is None and response is not None:
            message = response.text[:200]
        return classify(
            self.name,
            status,
            f"{status}, ErrorCode {code}: {message or 'no details'}",
            code=None if code is None else str(code),
            retry_after_s=retry_after_s(response.headers.get("Retry-After"))
            if response is not None
            else None,
            secrets=(self._token,),
        )


def metadata_value(idempotency_key: str) -> str:
    """The delivery id as Postmark metadata; a key too long for it is replaced by its digest."""
    if len(idempotency_key) <= METADATA_VALUE_MAX:
        return idempotency_key
    return "sha256:" + hashlib.sha256(idempotency_key.encode()).hexdigest()
