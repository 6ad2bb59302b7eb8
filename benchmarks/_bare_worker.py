"""The baseline of benchmarks/e2e_outbox.py: a bare Dramatiq actor writing the same .eml file.

Run as ``python benchmarks/_bare_worker.py REDIS_URL OUTBOX THREADS``: one worker process.
"""

from __future__ import annotations

import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from jobs.email.message import build_message, stable_message_id
from jobs.email.models import EmailSend
from jobs.email.providers.outbox import OutboxProvider

broker = RedisBroker(url=sys.argv[1] if len(sys.argv) > 1 else None, namespace="bare")
dramatiq.set_broker(broker)
_outbox: list[OutboxProvider] = []


@dramatiq.actor(max_retries=0)
def send_bare(key: str, data: dict[str, object]) -> None:
    email = EmailSend.model_validate(data)
    message = build_message(
        email,
        sender="taskmaster-worker@example.com",
        message_id=stable_message_id(key),
        date=datetime.now(UTC),
    )
    _outbox[0].send(message, idempotency_key=key, envelope_to=email.to)


if __name__ == "__main__":
    _outbox.append(OutboxProvider(Path(sys.argv[2])))
    worker = dramatiq.Worker(broker, worker_threads=int(sys.argv[3]), worker_timeout=100)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    stop.wait()
    worker.stop()
