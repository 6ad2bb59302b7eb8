"""Building RFC 5322 messages with the standard library's modern email API."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from jobs.email.models import EmailSend

MESSAGE_ID_DOMAIN = "taskmaster-worker"


def stable_message_id(idempotency_key: str) -> str:
    """The same Message-ID through every attempt of one email, so retries are recognisable."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"<{digest}@{MESSAGE_ID_DOMAIN}>"


def build_message(email: EmailSend, *, sender: str, message_id: str, date: datetime) -> EmailMessage:
    message = EmailMessage(policy=SMTP)
    message["From"] = email.from_ or sender
    message["To"] = ", ".join(email.to)
    if email.cc:
        message["Cc"] = ", ".join(email.cc)
    if email.reply_to:
        message["Reply-To"] = email.reply_to
    message["Subject"] = email.subject
    message["Date"] = format_datetime(date.astimezone(UTC))
    message["Message-ID"] = message_id
    for name, value in email.headers.items():
        message[name] = value
    # text/plain first, then text/html: clients show the last part they understand.
    if email.text is not None:
        message.set_content(email.text)
        if email.html is not None:
            message.add_alternative(email.html, subtype="html")
    elif email.html is not None:
        message.set_content(email.html, subtype="html")
    return message
