"""The contract every email provider keeps."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol


@dataclass(frozen=True)
class SendResult:
    provider: str
    provider_message_id: str
    # False when this exact message had already been handed over (a retry after a crash).
    fresh: bool = True


class Provider(Protocol):
    name: str

    def send(self, message: EmailMessage, *, idempotency_key: str, envelope_to: list[str]) -> SendResult:
        """Hand one message over, once per idempotency key, or raise."""
        ...
