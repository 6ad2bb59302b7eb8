"""The default provider: every email written as an `.eml` file to `<data dir>/outbox/`."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from jobs.email.message import Outgoing
from jobs.email.providers.base import BatchItem, SendResult, send_each
from jobs.email.providers.errors import ProviderError


class OutboxProvider:
    name = "outbox"
    # No batch endpoint: a batch is written one file at a time.
    max_batch = 1

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._tmp = directory / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, idempotency_key: str) -> Path:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        return self.directory / f"{digest}.eml"

    def send(self, message: Outgoing, *, idempotency_key: str, envelope_to: list[str]) -> SendResult:
        """Write the file atomically: a retry of the same email finds it there and writes nothing."""
        path = self.path_for(idempotency_key)
        if path.exists():
            return SendResult(self.name, path.name, fresh=False)
        tmp = self._tmp / f"{path.name}.{os.getpid()}.{threading.get_ident()}"
        tmp.write_bytes(message.as_bytes())
        os.replace(tmp, path)
        return SendResult(self.name, path.name)

    def send_batch(self, items: Sequence[BatchItem]) -> list[SendResult | ProviderError]:
        return send_each(self.send, items)

    def close(self) -> None:
        """Nothing held open."""
