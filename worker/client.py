"""Submitting jobs from Python: ``Client(redis_url).submit(type, data, id=None)``.

It writes exactly what any other language writes (DESIGN.md, Intake): one XADD of a JSON
envelope to ``<prefix>:intake``. Validation happens in the daemon; a bad job shows up in
``<prefix>:intake:rejected``. ``submit`` returns the intake entry id, which events carry back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from worker.keys import Keys


class Client:
    def __init__(self, redis_url: str, *, prefix: str = "taskmaster") -> None:
        self._redis = redis.Redis.from_url(redis_url)
        self._keys = Keys(prefix)

    @staticmethod
    def envelope(job_type: str, data: Mapping[str, Any], id: str | None = None) -> str:
        job: dict[str, Any] = {"type": job_type, "data": dict(data)}
        if id is not None:
            job["id"] = id
        return json.dumps(job, separators=(",", ":"), ensure_ascii=False)

    def submit(self, job_type: str, data: Mapping[str, Any], id: str | None = None) -> str:
        entry = self._redis.xadd(self._keys.intake, {"job": self.envelope(job_type, data, id)})
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    def submit_many(self, jobs: Iterable[tuple[str, Mapping[str, Any], str | None]]) -> list[str]:
        """Submit several jobs in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for job_type, data, job_id in jobs:
            pipe.xadd(self._keys.intake, {"job": self.envelope(job_type, data, job_id)})
        return [e.decode() if isinstance(e, bytes) else str(e) for e in pipe.execute()]

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
