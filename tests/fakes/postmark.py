"""Postmark's Email API, as documented (postmarkapp.com/developer/api/email-api, /api/overview).

- ``POST /email`` with ``Accept`` and ``Content-Type: application/json`` and the
  ``X-Postmark-Server-Token`` header answers 200 ``{"To", "SubmittedAt", "MessageID",
  "ErrorCode": 0, "Message": "OK"}``.
- A wrong or missing token is 401 with ErrorCode 10; an email Postmark refuses is 422 with an
  ErrorCode: 300 invalid email request, 406 inactive recipient, 402 invalid JSON, 409 JSON
  required (the overview's error code table).
- ``POST /email/batch`` takes up to 500 messages (more is ErrorCode 410) and always answers 200
  with one result per message, in order, each with its own ErrorCode.
- Metadata: at most 10 fields, names of 20 characters, values of 80 (custom metadata FAQ).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.fakes import addresses_in, valid_address
from tests.fakes.http import FakeHTTPServer, Reply, Request

MAX_BATCH = 500
NO_TOKEN = (
    "No Account or Server API tokens were supplied in the HTTP headers."
    " Please add a header for either X-Postmark-Server-Token or X-Postmark-Account-Token."
)
BAD_TOKEN = (
    "The Server Token you provided in the X-Postmark-Server-Token request header was invalid."
    " Please verify that you are using a valid token."
)
MAX_RECIPIENTS = 50


@dataclass(frozen=True)
class Accepted:
    message_id: str
    payload: dict[str, Any]


class FakePostmark(FakeHTTPServer):
    def __init__(self, server_token: str = "fake-postmark-server-token", *, delay_s: float = 0.0) -> None:
        super().__init__(delay_s=delay_s)
        self.server_token = server_token
        # Addresses that bounced hard or complained: sending to them is ErrorCode 406.
        self.inactive: set[str] = set()
        self.accepted: list[Accepted] = []
        self._accepted_lock = threading.Lock()

    @staticmethod
    def rate_limited(retry_after_s: int | None = None) -> Reply:
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else {}
        return Reply.json(429, {"ErrorCode": 429, "Message": "Rate limit exceeded."}, headers)

    @staticmethod
    def server_error(status: int = 500) -> Reply:
        return Reply.json(
            status, {"ErrorCode": 100 if status == 503 else 500, "Message": "Internal server error."}
        )

    def handle(self, request: Request) -> Reply:
        if request.method != "POST" or request.path not in ("/email", "/email/batch"):
            return Reply.json(404, {"ErrorCode": 404, "Message": "Entity doesn't exist."})
        token = request.header("X-Postmark-Server-Token")
        if token is None:
            return Reply.json(
                401,
                {
                    "ErrorCode": 10,
                    "Message": NO_TOKEN,
                },
            )
        if token != self.server_token:
            return Reply.json(
                401,
                {
                    "ErrorCode": 10,
                    "Message": BAD_TOKEN,
                },
            )
        if "application/json" not in (request.header("Accept") or "") or "application/json" not in (
            request.header("Content-Type") or ""
        ):
            return Reply.json(
                422,
                {
                    "ErrorCode": 409,
                    "Message": "JSON required. Set the Accept and Content-Type headers to application/json.",
                },
            )
        try:
            payload = request.json()
        except ValueError:
            return Reply.json(422, {"ErrorCode": 402, "Message": "Received invalid JSON input."})
        if request.path == "/email":
            if not isinstance(payload, dict):
                return Reply.json(422, {"ErrorCode": 403, "Message": "Incompatible JSON input."})
            result = self._send(payload)
            return Reply.json(200 if result["ErrorCode"] == 0 else 422, result)
        if not isinstance(payload, list):
            return Reply.json(422, {"ErrorCode": 403, "Message": "Incompatible JSON input."})
        if len(payload) > MAX_BATCH:
            return Reply.json(
                422,
                {
                    "ErrorCode": 410,
                    "Message": f"Too many batch messages ({len(payload)}). The maximum is {MAX_BATCH}.",
                },
            )
        return Reply.json(
            200,
            [
                self._send(message) if isinstance(message, dict) else _error(403, "Incompatible JSON input.")
                for message in payload
            ],
        )

    def _send(self, message: dict[str, Any]) -> dict[str, Any]:
        problem = self._problem(message)
        if problem is not None:
            return _error(*problem)
        message_id = str(uuid.uuid4())
        with self._accepted_lock:
            self.accepted.append(Accepted(message_id, message))
        return {
            "To": message["To"],
            "SubmittedAt": datetime.now(UTC).isoformat(),
            "MessageID": message_id,
            "ErrorCode": 0,
            "Message": "OK",
        }

    def _problem(self, message: dict[str, Any]) -> tuple[int, str] | None:
        sender = addresses_in(str(message.get("From", "")))
        if len(sender) != 1 or not valid_address(sender[0]):
            return 300, f"Invalid 'From' address: '{message.get('From', '')}'."
        recipients: list[str] = []
        for field in ("To", "Cc", "Bcc"):
            for address in addresses_in(str(message.get(field) or "")):
                if not valid_address(address):
                    return (
                        300,
                        f"Error parsing '{field}': Illegal email address '{address}'."
                        " It must contain the '@' symbol.",
                    )
                recipients.append(address)
        if not addresses_in(str(message.get("To") or "")):
            return 300, "Zero recipients specified"
        if len(recipients) > MAX_RECIPIENTS:
            return 300, f"You can send to at most {MAX_RECIPIENTS} recipients (To, Cc and Bcc)."
        if not message.get("TextBody") and not message.get("HtmlBody"):
            return 300, "Provide either email TextBody or HtmlBody or both."
        metadata = message.get("Metadata") or {}
        if len(metadata) > 10 or any(len(k) > 20 or len(str(v)) > 80 for k, v in metadata.items()):
            return 300, "Metadata: at most 10 fields, names up to 20 characters, values up to 80."
        inactive = [a for a in recipients if a.lower() in self.inactive]
        if inactive:
            return (
                406,
                "You tried to send to recipient(s) that have been marked as inactive."
                f" Found inactive addresses: {', '.join(inactive)}."
                " Inactive recipients are ones that have generated a hard bounce, a spam complaint,"
                " or a manual suppression.",
            )
        return None


def _error(code: int, message: str) -> dict[str, Any]:
    return {"ErrorCode": code, "Message": message}
