"""Resend's email endpoints, as documented (resend.com/docs/api-reference).

- ``POST /emails`` with ``Authorization: Bearer <key>`` answers 200 ``{"id"}``;
  ``POST /emails/batch`` takes up to 100 emails and answers 200 ``{"data": [{"id"}, ...]}``; with
  ``x-batch-validation: permissive`` the invalid ones are left out and listed under ``"errors":
  [{"index", "message"}]``, else one invalid email fails the batch (batch validation modes).
- Errors are ``{"statusCode", "name", "message"}`` (errors page): 401 missing_api_key, 403
  invalid_api_key, 422 missing_required_field / validation_error, 400 invalid_idempotency_key,
  409 invalid_idempotent_request and concurrent_idempotent_requests, 429 rate_limit_exceeded,
  daily_quota_exceeded, monthly_quota_exceeded with ``retry-after`` and ``ratelimit-*`` headers
  (usage limits page).
- A request without a ``User-Agent`` never reaches the API: 403 ``error code: 1010`` in plain text
  (introduction; knowledge base "403 error 1010").
- ``Idempotency-Key`` (1-256 characters) is kept 24 hours: the same payload again gets the first
  answer replayed and sends nothing; another payload under that key is a 409 (idempotency keys).
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from tests.fakes import addresses_in, valid_address
from tests.fakes.http import FakeHTTPServer, Reply, Request

MAX_BATCH = 100
MAX_TO = 50
FORMAT = " The email address needs to follow the `email@example.com` or `Name <email@example.com>` format."


@dataclass(frozen=True)
class Accepted:
    id: str
    payload: dict[str, Any]


def error(status: int, name: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply.json(status, {"statusCode": status, "name": name, "message": message}, headers)


class FakeResend(FakeHTTPServer):
    def __init__(self, api_key: str = "re_fake_0123456789abcdef", *, delay_s: float = 0.0) -> None:
        super().__init__(delay_s=delay_s)
        self.api_key = api_key
        # While set, the first request under a key stays "in progress" until it is released.
        self.hold: threading.Event | None = None
        self.accepted: list[Accepted] = []
        self._idempotency: dict[tuple[str, str], tuple[str, Reply | None]] = {}
        self._state_lock = threading.Lock()

    @staticmethod
    def rate_limited(retry_after_s: int = 1) -> Reply:
        headers = {
            "retry-after": str(retry_after_s),
            "ratelimit-limit": "2",
            "ratelimit-remaining": "0",
            "ratelimit-reset": str(retry_after_s),
        }
        return error(
            429, "rate_limit_exceeded", "Too many requests. You can only make 2 requests per second.", headers
        )

    @staticmethod
    def quota_exceeded(period: str = "daily") -> Reply:
        return error(
            429,
            f"{period}_quota_exceeded",
            f"You have reached your {period} email sending quota.",
            {"retry-after": "60"},
        )

    @staticmethod
    def server_error() -> Reply:
        return error(500, "application_error", "An unexpected error occurred.")

    def in_progress(self) -> int:
        """Requests under an idempotency key still being processed."""
        with self._state_lock:
            return sum(1 for _, reply in self._idempotency.values() if reply is None)

    def handle(self, request: Request) -> Reply:
        if not request.header("User-Agent"):
            return Reply.text(403, "error code: 1010")
        if request.method != "POST" or request.path not in ("/emails", "/emails/batch"):
            return error(404, "not_found", "The requested endpoint does not exist.")
        authorization = request.header("Authorization")
        if not authorization:
            return error(401, "missing_api_key", "Missing API key in the authorization header.")
        if authorization != f"Bearer {self.api_key}":
            return error(403, "invalid_api_key", "API key is invalid.")
        key = request.header("Idempotency-Key")
        if key is not None and not 1 <= len(key) <= 256:
            return error(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")
        if key is None:
            return self._process(request)
        return self._idempotent(request, key)

    def _idempotent(self, request: Request, key: str) -> Reply:
        digest = hashlib.sha256(request.body).hexdigest()
        with self._state_lock:
            known = self._idempotency.get((request.path, key))
            if known is None:
                self._idempotency[(request.path, key)] = (digest, None)
        if known is not None:
            known_digest, reply = known
            if known_digest != digest:
                return error(
                    409,
                    "invalid_idempotent_request",
                    "Same idempotency key used with a different request payload.",
                )
            if reply is None:
                return error(
                    409,
                    "concurrent_idempotent_requests",
                    "Same idempotency key used while original request is still in progress.",
                )
            return reply
        if self.hold is not None:
            self.hold.wait(timeout=10)
        reply = self._process(request)
        with self._state_lock:
            if reply.status == 200:
                self._idempotency[(request.path, key)] = (digest, reply)
            else:
                del self._idempotency[(request.path, key)]
        return reply

    def _process(self, request: Request) -> Reply:
        try:
            payload = request.json()
        except ValueError:
            return error(400, "validation_error", "Invalid JSON body.")
        if request.path == "/emails":
            if not isinstance(payload, dict):
                return error(422, "validation_error", "The body must be a JSON object.")
            problem = _problem(payload)
            return problem or Reply.json(200, {"id": self._accept(payload)})
        if not isinstance(payload, list) or not payload:
            return error(422, "validation_error", "The body must be a JSON array of emails.")
        if len(payload) > MAX_BATCH:
            return error(
                422, "validation_error", f"Too many emails in the batch. The maximum is {MAX_BATCH}."
            )
        permissive = (request.header("x-batch-validation") or "strict") == "permissive"
        problems = {
            i: _problem(email)
            if isinstance(email, dict)
            else error(422, "validation_error", "Not an object.")
            for i, email in enumerate(payload)
        }
        refused = {i: p for i, p in problems.items() if p is not None}
        if refused and not permissive:
            return next(iter(refused.values()))
        data = [{"id": self._accept(email)} for i, email in enumerate(payload) if i not in refused]
        body: dict[str, Any] = {"data": data}
        if permissive:
            body["errors"] = [
                {"index": i, "message": json.loads(reply.body)["message"]} for i, reply in refused.items()
            ]
        return Reply.json(200, body)

    def _accept(self, payload: dict[str, Any]) -> str:
        email_id = str(uuid.uuid4())
        with self._state_lock:
            self.accepted.append(Accepted(email_id, payload))
        return email_id


def _problem(email: dict[str, Any]) -> Reply | None:
    for field in ("from", "to", "subject"):
        if not email.get(field):
            return error(422, "missing_required_field", f"Missing `{field}` field.")
    sender = addresses_in(str(email["from"]))
    if len(sender) != 1 or not valid_address(sender[0]):
        return error(
            422,
            "invalid_from_address",
            "Invalid `from` field." + FORMAT,
        )
    for field in ("to", "cc", "bcc", "reply_to"):
        value = email.get(field) or []
        values = [value] if isinstance(value, str) else list(value)
        if field == "to" and len(values) > MAX_TO:
            return error(
                422, "validation_error", f"Too many recipients in the `to` field. The maximum is {MAX_TO}."
            )
        for entry in values:
            if not all(valid_address(a) for a in addresses_in(str(entry))):
                return error(
                    422,
                    "validation_error",
                    f"Invalid `{field}` field." + FORMAT,
                )
    if not email.get("html") and not email.get("text"):
        return error(422, "validation_error", "Missing `html` or `text` field.")
    if "headers" in email and not isinstance(email["headers"], dict):
        return error(422, "validation_error", "The `headers` field must be an object.")
    return None
