"""Jobs due later: kept in Redis by due time and released into their queues when due.

Holds of hours or days (quiet hours, do-not-disturb, digests, `send_at`, webhook retries) are
not Dramatiq delayed messages, which a worker keeps in memory until due: here 100,000 held jobs
cost no worker memory, survive any restart, and are released by whichever daemon looks first
(every daemon with the intake role runs a releaser; the release script is atomic).

An item has a caller-chosen key: putting the same key again replaces the item (a digest whose
window moves), and `cancel(key)` withdraws it. The Dramatiq message is built when the item is
put, stamped with its due time as the message time, so age limits count from when it is due.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from typing import Any

import redis

from worker.keys import Keys
from worker.logging import get_logger
from worker.registry import JobType
from worker.submit import build_message

log = get_logger(__name__)

_RELEASE = resources.files("worker").joinpath("due.lua").read_text()
RELEASE_BATCH = 500


class DueStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._release = client.register_script(_RELEASE)

    @property
    def _set(self) -> str:
        return self._keys.due

    @property
    def _items(self) -> str:
        return self._keys.due_items

    def put(
        self,
        key: str,
        job_type: JobType[Any],
        data: dict[str, Any],
        due_at: datetime,
        *,
        job_id: str | None = None,
        entry: str | None = None,
        submitted_ms: int | None = None,
        queue: str | None = None,
    ) -> None:
        """Hold ``job_type(data)`` until ``due_at`` (aware); replaces an item of the same key."""
        self.put_many(
            [
                self.item(
                    key,
                    job_type,
                    data,
                    due_at,
                    job_id=job_id,
                    entry=entry,
                    submitted_ms=submitted_ms,
                    queue=queue,
                )
            ]
        )

    def item(
        self,
        key: str,
        job_type: JobType[Any],
        data: dict[str, Any],
        due_at: datetime,
        *,
        job_id: str | None = None,
        entry: str | None = None,
        submitted_ms: int | None = None,
        queue: str | None = None,
    ) -> tuple[str, int, str]:
        """(key, due ms, encoded item) for `put_many`."""
        if due_at.tzinfo is None:
            raise ValueError("due_at must be timezone-aware")
        due_ms = int(due_at.timestamp() * 1000)
        queue = queue or job_type.queue_for(job_type.model.model_validate(data))
        message_id, message = build_message(
            job_type,
            data,
            queue=queue,
            job_id=job_id,
            entry=entry,
            submitted_ms=submitted_ms if submitted_ms is not None else int(time.time() * 1000),
        )
        stamped = json.loads(message)
        stamped["message_timestamp"] = due_ms
        item = {
            "queue": self._keys.queue(queue),
            "msgs": self._keys.queue_messages(queue),
            "id": message_id,
            "message": json.dumps(stamped, separators=(",", ":")),
        }
        return key, due_ms, json.dumps(item, separators=(",", ":"))

    def put_many(self, items: Sequence[tuple[str, int, str]]) -> None:
        """Hold each item of `item` in one transaction."""
        if not items:
            return
        pipe = self._client.pipeline(transaction=True)
        for key, due_ms, item in items:
            pipe.hset(self._items, key, item)
            pipe.zadd(self._set, {key: due_ms})
        pipe.execute()

    def cancel(self, key: str) -> bool:
        """Withdraw an item not yet released; False when there was none."""
        pipe = self._client.pipeline(transaction=True)
        pipe.zrem(self._set, key)
        pipe.hdel(self._items, key)
        removed, _ = pipe.execute()
        return bool(removed)

    def due_at(self, key: str) -> datetime | None:
        from datetime import UTC

        score = self._client.zscore(self._set, key)
        return None if score is None else datetime.fromtimestamp(float(score) / 1000, UTC)

    def count(self) -> int:
        return int(self._client.zcard(self._set))

    def release_due(self, now_ms: int | None = None) -> int:
        """Move every item due by ``now_ms`` into its queue; return how many moved."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        released = 0
        while True:
            moved = int(self._release(keys=[self._set, self._items], args=[now, RELEASE_BATCH]))
            released += moved
            if moved < RELEASE_BATCH:
                return released


def run_releaser(store: DueStore, stop: threading.Event, interval_s: float = 0.2) -> None:
    """Release due items until ``stop`` is set; wait out Redis outages."""
    while not stop.wait(interval_s):
        try:
            store.release_due()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            stop.wait(1.0)
        except redis.RedisError as exc:
            log.warning("due.release_failed", error=str(exc))
            stop.wait(1.0)
