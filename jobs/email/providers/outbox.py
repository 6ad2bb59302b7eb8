"""The default provider: every email written as an `.eml` file to `<data dir>/outbox/`."""

from __future__ import annotations

import hashlib
import os
from email.message import EmailMessage
from pathlib import Path

from jobs.email.providers.base import SendResult


class OutboxProvider:
    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._tmp = directory / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, idempotency_key: str) -> Path:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        return self.directory / f"{digest}.eml"

    def send(self, message: EmailMessage, *, idempotency_key: str, envelope_to: list[str]) -> SendResult:
        """Write the file atomically: a retry of the same email finds it there and writes nothing."""
        path = self.path_for(idempotency_key)
        if path.exists():
            return SendResult(self.name, path.name, fresh=False)
        tmp = self._tmp / f"{path.name}.{os.getpid()}"
        tmp.write_bytes(message.as_bytes())
        os.replace(tmp, path)
        return SendResult(self.name, path.name)
