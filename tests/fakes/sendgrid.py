"""SendGrid's v3 Mail Send endpoint, as documented.

- ``POST /v3/mail/send`` with ``Authorization: Bearer <key>`` answers ``202 Accepted`` with an
  empty body and the message's id in the ``X-Message-Id`` header
  (twilio.com/docs/sendgrid/api-reference/mail-send/mail-send; glossary/x-message-id).
- A failed request answers ``{"errors": [{"message", "field", "help"}]}``: 400 for the
  parameter errors listed on .../mail-send/errors (personalizations, from, subject, content with
  text/plain first, custom_args an object of strings, reserved headers), 401 "The provided
  authorization grant is invalid, expired, or revoked", 415 for a body that is not JSON
  (.../how-to-use-the-sendgrid-v3-api/errors).
- 429 carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (a Unix
  time) with ``{"errors": [{"field": null, "message": "too many requests"}]}``
  (.../how-to-use-the-sendgrid-v3-api/rate-limits).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from tests.fakes import valid_address
from tests.fakes.http import FakeHTTPServer, Reply, Request

HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
# The reserved headers of the Mail Send API (also listed by the library's Header helper).
RESERVED_HEADERS = {
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
}


@dataclass(frozen=True)
class Accepted:
    message_id: str
    payload: dict[str, Any]


def errors(*items: tuple[str | None, str]) -> dict[str, Any]:
    return {
        "errors": [
            {"field": field, "message": message, "help": HELP if field else None} for field, message in items
        ]
    }


class FakeSendGrid(FakeHTTPServer):
    def __init__(self, api_key: str = "SG.fake-key.fake-secret", *, delay_s: float = 0.0) -> None:
        super().__init__(delay_s=delay_s)
        self.api_key = api_key
        self.accepted: list[Accepted] = []
        self._accepted_lock = threading.Lock()

    @staticmethod
    def rate_limited(reset_in_s: int = 30) -> Reply:
        reset = str(int(time.time()) + reset_in_s)
        headers = {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
        return Reply.json(429, errors((None, "too many requests")), headers)

    @staticmethod
    def server_error(status: int = 500) -> Reply:
        return Reply.json(status, errors((None, "internal error")))

    def handle(self, request: Request) -> Reply:
        if request.method != "POST" or request.path != "/v3/mail/send":
            return Reply.json(404, errors((None, "not found")))
        if request.header("Authorization") != f"Bearer {self.api_key}":
            return Reply.json(
                401, errors((None, "The provided authorization grant is invalid, expired, or revoked"))
            )
        if (request.header("Content-Type") or "").split(";")[0].strip() != "application/json":
            return Reply.json(415, errors((None, "Content-Type should be application/json.")))
        try:
            payload = request.json()
        except ValueError:
            return Reply.json(400, errors((None, "Bad Request")))
        problems = validate(payload) if isinstance(payload, dict) else [(None, "Bad Request")]
        if problems:
            return Reply.json(400, errors(*problems))
        message_id = secrets.token_urlsafe(16)[:22]
        with self._accepted_lock:
            self.accepted.append(Accepted(message_id, payload))
        return Reply(202, b"", {"X-Message-Id": message_id})


def validate(mail: dict[str, Any]) -> list[tuple[str | None, str]]:
    """The parameter errors of .../mail-send/errors that a plain email can meet."""
    problems: list[tuple[str | None, str]] = []
    personalizations = mail.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(("personalizations", "You must have at least one personalization."))
        personalizations = []
    if len(personalizations) > 1000:
        problems.append(
            ("personalizations", "The personalization block is limited to 1000 personalizations.")
        )
    total = 0
    for index, personalization in enumerate(personalizations):
        seen: set[str] = set()
        if not personalization.get("to"):
            problems.append(
                (
                    f"personalizations.{index}.to",
                    "The to parameter is required for all personalization objects.",
                )
            )
        for kind in ("to", "cc", "bcc"):
            for position, recipient in enumerate(personalization.get(kind) or []):
                total += 1
                email = str(recipient.get("email", ""))
                field = f"personalizations.{index}.{kind}.{position}.email"
                if not valid_address(email):
                    problems.append((field, "Does not contain a valid address."))
                elif email.lower() in seen:
                    problems.append(
                        (
                            f"personalizations.{index}",
                            "Each email address in the personalization block should be unique"
                            " between to, cc, and bcc. We found the first duplicate"
                            f" instance of [{email}] in the personalizations.{index}.{kind} field.",
                        )
                    )
                seen.add(email.lower())
    if total > 1000:
        problems.append(
            ("personalizations", "There is a limit of 1000 total recipients (to + cc + bcc) per request.")
        )
    sender = mail.get("from")
    if not isinstance(sender, dict) or "email" not in sender:
        problems.append(("from", "The from object must be provided for every email send."))
    elif not valid_address(str(sender["email"])):
        problems.append(("from.email", "The from email does not contain a valid address."))
    if not mail.get("subject") and not all(p.get("subject") for p in personalizations):
        problems.append(("subject", "The subject is required."))
    problems.extend(_content_problems(mail.get("content")))
    custom_args = mail.get("custom_args", {})
    if not isinstance(custom_args, dict):
        problems.append(
            ("custom_args", f"Invalid type. Expected: object, given: {type(custom_args).__name__}.")
        )
    elif any(not isinstance(value, str) for value in custom_args.values()):
        problems.append(("custom_args", "Custom args values must be strings."))
    for name in mail.get("headers") or {}:
        if name.lower() in RESERVED_HEADERS:
            problems.append(("headers", f"The header {name} is reserved and cannot be set."))
    return problems


def _content_problems(content: Any) -> list[tuple[str | None, str]]:
    if not isinstance(content, list) or not content:
        return [("content", "Unless a valid template_id is provided, the content parameter is required.")]
    problems: list[tuple[str | None, str]] = []
    types = [block.get("type") for block in content]
    if "text/plain" in types and types[0] != "text/plain":
        problems.append(
            (
                "content.0.type",
                "If present, text/plain must be first, followed by text/html, followed by any other content.",
            )
        )
    for index, block in enumerate(content):
        if not isinstance(block.get("value"), str) or not block["value"]:
            problems.append(
                (
                    f"content.{index}.value",
                    "The content value must be a string at least one character in length.",
                )
            )
    return problems
