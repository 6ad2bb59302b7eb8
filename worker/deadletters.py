"""The dead letters: jobs that failed for good, kept TASKMASTER_DEAD_LETTER_TTL (Dramatiq's XQ)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from worker.keys import Keys
from worker.registry import QUEUES


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    redis_id: str
    dead_at: datetime
    message: dict[str, Any]

    @property
    def job(self) -> dict[str, Any]:
        return dict((self.message.get("options") or {}).get("job") or {})

    @property
    def error(self) -> str:
        options = self.message.get("options") or {}
        if options.get("error"):
            return str(options["error"])
        trace = options.get("traceback") or ""
        lines = [line for line in trace.strip().splitlines() if line.strip()]
        return lines[-1] if lines else "(no error recorded)"


class DeadLetters:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    def list(self, limit: int = 1000) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        for queue in QUEUES:
            entries: Any = self.client.zrange(self.keys.dead_letters(queue), 0, limit - 1, withscores=True)
            if not entries:
                continue
            ids = [member for member, _ in entries]
            bodies: Any = self.client.hmget(self.keys.dead_letter_messages(queue), ids)
            for (member, score), body in zip(entries, bodies, strict=True):
                if body is None:
                    continue
                out.append(
                    DeadLetter(
                        queue=queue,
                        redis_id=member.decode(),
                        dead_at=datetime.fromtimestamp(score / 1000, UTC),
                        message=json.loads(body),
                    )
                )
        return out

    def count(self) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.zcard(self.keys.dead_letters(queue))
        return dict(zip(QUEUES, (int(n) for n in pipe.execute()), strict=True))

    def retry(self, ids: set[str] | None = None) -> int:
        """Put dead letters (all, or those whose redis id or job id is in ``ids``) back in their queue."""
        moved = 0
        for letter in self.list(limit=100_000):
            if ids is not None and not (
                {letter.redis_id, letter.job.get("id"), letter.message.get("message_id")} & ids
            ):
                continue
            message = dict(letter.message)
            options = dict(message.get("options") or {})
            for stale in ("retries", "traceback", "requeue_timestamp", "eta", "max_retries", "error"):
                options.pop(stale, None)
            message["options"] = options
            message["queue_name"] = letter.queue
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(self.keys.dead_letters(letter.queue), letter.redis_id)
            pipe.hdel(self.keys.dead_letter_messages(letter.queue), letter.redis_id)
            pipe.hset(self.keys.queue_messages(letter.queue), letter.redis_id, json.dumps(message))
            pipe.rpush(self.keys.queue(letter.queue), letter.redis_id)
            pipe.execute()
            moved += 1
        return moved

    def purge(self, ids: set[str] | None = None) -> int:
        removed = 0
        for letter in self.list(limit=100_000):
            if ids is not None and not (
                {letter.redis_id, letter.job.get("id"), letter.message.get("message_id")} & ids
            ):
                continue
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(self.keys.dead_letters(letter.queue), letter.redis_id)
            pipe.hdel(self.keys.dead_letter_messages(letter.queue), letter.redis_id)
            pipe.execute()
            removed += 1
        return removed
