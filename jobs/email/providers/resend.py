"""Resend: ``POST /emails`` and ``POST /emails/batch`` (up to 100 emails) with requests.

Resend answers 200 with ``{"id"}``, and errors as ``{"statusCode", "name", "message"}``
(resend.com/docs/api-reference/errors). It keeps an ``Idempotency-Key`` for 24 hours: the same
payload again replays the first answer without sending, a different payload under the same key
is a 409. Every request must carry a ``User-Agent`` or it is refused with a 403 before it reaches
the API (resend.com/docs/api-reference/introduction).
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
from jobs.email.providers.errors import NO_ANSWER, ProviderError, classify, log_failure, retry_after_s

# Resend's limit on an Idempotency-Key.
IDEMPOTENCY_KEY_MAX = 256


class ResendProvider:
    name = "resend"
    max_batch = 100

    def __init__(self, api_key: str, *, base_url: str, timeout_s: float) -> None:
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._sessions = SessionPerThread(
            {
                "Accept": "application/json",
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            }
        )

    def send(self, message: Outgoing, *, idempotency_key: str, envelope_to: list[str]) -> SendResult:
        response = self._sessions.post_json(
            self.name,
            f"{self._base_url}/emails",
            payload(parts_of(message, envelope_to)),
            timeout_s=self._timeout_s,
            headers={"Idempotency-Key": resend_key(idempotency_key)},
        )
        body = json_body(response)
        if response.status_code == 200 and isinstance(body, dict) and body.get("id"):
            return SendResult(self.name, str(body["id"]))
        error = self._error(response, body)
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
        # The same emails in the same order make the same key, so a retried batch is replayed.
        batch_key = (
            "batch:" + hashlib.sha256("\n".join(i.idempotency_key for i in items).encode()).hexdigest()
        )
        try:
            response = self._sessions.post_json(
                self.name,
                f"{self._base_url}/emails/batch",
                [payload(parts_of(i.message, i.envelope_to)) for i in items],
                timeout_s=self._timeout_s,
                # Permissive: a bad email fails alone instead of failing the batch around it.
                headers={"Idempotency-Key": batch_key, "x-batch-validation": "permissive"},
            )
        except ProviderError as exc:
            return [exc] * len(items)
        body = json_body(response)
        if response.status_code != 200 or not isinstance(body, dict):
            error = self._error(response, body)
            log_failure(error)
            return [error] * len(items)
        return self._batch_results(items, body)

    def _batch_results(
        self, items: Sequence[BatchItem], body: dict[str, Any]
    ) -> list[SendResult | ProviderError]:
        refused: dict[int, str] = {}
        for entry in body.get("errors") or []:
            if isinstance(entry, dict) and isinstance(entry.get("index"), int):
                refused[entry["index"]] = str(entry.get("message", ""))
        ids = [str(entry.get("id", "")) for entry in body.get("data") or [] if isinstance(entry, dict)]
        accepted = [index for index in range(len(items)) if index not in refused]
        if len(ids) != len(accepted):
            # The ids follow the accepted emails in order; without that, any of them may have gone.
            error = classify(self.name, NO_ANSWER, "the batch answer does not match the batch")
            log_failure(error)
            return [error] * len(items)
        results: list[SendResult | ProviderError] = []
        ids_left = iter(ids)
        for index in range(len(items)):
            if index in refused:
                error = classify(self.name, 422, refused[index], code="validation_error")
                log_failure(error)
                results.append(error)
            else:
                results.append(SendResult(self.name, next(ids_left)))
        return results

    def _error(self, response: requests.Response, body: Any) -> ProviderError:
        name = body.get("name") if isinstance(body, dict) else None
        message = body.get("message") if isinstance(body, dict) else response.text[:200]
        return classify(
            self.name,
            response.status_code,
            f"{response.status_code} {name or ''}: {message or 'no details'}".replace(" :", ":"),
            code=name,
            retry_after_s=retry_after_s(response.headers.get("retry-after")),
            secrets=(self._api_key,),
        )


def payload(parts: MessageParts) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": parts.sender.formatted(),
        "to": [a.formatted() for a in parts.to],
        "subject": parts.subject,
    }
    for field, addresses in (("cc", parts.cc), ("bcc", parts.bcc), ("reply_to", parts.reply_to)):
        if addresses:
            body[field] = [a.formatted() for a in addresses]
    if parts.text is not None:
        body["text"] = parts.text
    if parts.html is not None:
        body["html"] = parts.html
    if parts.headers:
        body["headers"] = dict(parts.headers)
    return body


def resend_key(idempotency_key: str) -> str:
    """Our key as Resend takes it, 1 to 256 printable ASCII characters (a header), else its digest."""
    if (
        0 < len(idempotency_key) <= IDEMPOTENCY_KEY_MAX
        and idempotency_key.isascii()
        and idempotency_key.isprintable()
    ):
        return idempotency_key
    return "sha256:" + hashlib.sha256(idempotency_key.encode()).hexdigest()
