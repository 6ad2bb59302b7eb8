"""The events stream: what the daemon reports back to the host (DESIGN.md, Events)."""

from __future__ import annotations

import json
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from worker.keys import Keys
from worker.logging import redact


@dataclass(frozen=True)
class JobRef:
    """Which submitted job an event results from: its type, the host's id and the intake entry."""

    type: str
    id: str | None
    entry: str | None

    def as_event_data(self) -> dict[str, str]:
        out = {"job_type": self.type}
        if self.id is not None:
            out["id"] = self.id
        if self.entry is not None:
            out["entry"] = self.entry
        return out


# The job being processed by this thread, set by the runtime around each job.
current_job: ContextVar[JobRef | None] = ContextVar("current_job", default=None)


_last_iso: tuple[int, str] = (0, "")


def now_iso() -> str:
    """The time in UTC to the millisecond; formatted once per millisecond (a batch reports
    dozens of events within one)."""
    global _last_iso
    ms = time.time_ns() // 1_000_000
    last = _last_iso
    if last[0] == ms:
        return last[1]
    at = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
    text = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    _last_iso = (ms, text)
    return text


def encode_event(event_type: str, data: dict[str, Any], job: JobRef | None) -> str:
    body = dict(data)
    if job is not None:
        for key, value in job.as_event_data().items():
            body.setdefault(key, value)
    # Events leave the daemon: nothing secret-looking goes into them.
    return json.dumps({"type": event_type, "at": now_iso(), "data": redact(body)}, separators=(",", ":"))


class Events:
    """Publishes to ``<prefix>:events``, approximately trimmed to TASKMASTER_EVENTS_MAXLEN."""

    def __init__(self, client: redis.Redis, keys: Keys, maxlen: int) -> None:
        self._client = client
        self._stream = keys.events
        self._maxlen = maxlen

    @property
    def stream(self) -> str:
        return self._stream

    @property
    def maxlen(self) -> int:
        return self._maxlen

    def publish(self, event_type: str, data: dict[str, Any], *, job: JobRef | None = None) -> str:
        """Add one event; ``job`` defaults to the job this thread is running."""
        payload = encode_event(event_type, data, job or current_job.get())
        entry = self._client.xadd(self._stream, {"event": payload}, maxlen=self._maxlen, approximate=True)
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    def publish_in(
        self, pipe: Any, event_type: str, data: dict[str, Any], *, job: JobRef | None = None
    ) -> None:
        """Queue one event on a pipeline, to go with the caller's other writes."""
        payload = encode_event(event_type, data, job or current_job.get())
        pipe.xadd(self._stream, {"event": payload}, maxlen=self._maxlen, approximate=True)


class Emitter:
    """Reports the outcomes of one job: call it with an event; ``encode`` gives one to a caller
    that publishes it in a script of its own, atomically with its other writes."""

    __slots__ = ("_events", "_job")

    def __init__(self, events: Events, job: JobRef | None) -> None:
        self._events = events
        self._job = job

    def __call__(self, event_type: str, data: dict[str, Any]) -> None:
        self._events.publish(event_type, data, job=self._job)

    def encode(self, event_type: str, data: dict[str, Any]) -> str:
        """The event as it would be published: for a caller that publishes it in a script."""
        return encode_event(event_type, data, self._job)
