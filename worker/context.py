"""What a job handler is given: the job's identity and the process's services."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.events import Emitter, JobRef

if TYPE_CHECKING:
    from worker.runtime import Runtime


@dataclass(frozen=True)
class JobContext:
    runtime: Runtime
    job: JobRef
    # Milliseconds since the epoch when the host submitted the job (its intake entry's time).
    submitted_ms: int
    # 0 on the first attempt, then the number of retries so far.
    retries: int
    message_id: str

    @property
    def settings(self) -> Any:
        return self.runtime.settings

    @property
    def emit(self) -> Emitter:
        """Reports an outcome on the events stream, tagged with this job's id and entry:
        ``ctx.emit(event_type, data)``."""
        return Emitter(self.runtime.events, self.job)

    def backoff_s(self, cap_s: float | None = None) -> float:
        """How long to wait before trying this job again: exponential from
        TASKMASTER_JOB_MIN_BACKOFF by its retries so far, capped (by default at
        TASKMASTER_JOB_MAX_BACKOFF), with jitter over the upper half."""
        settings = self.runtime.settings
        cap = settings.job_max_backoff if cap_s is None else cap_s
        ceiling = min(cap, settings.job_min_backoff * 2**self.retries)
        return random.uniform(ceiling / 2, ceiling)

    @property
    def idempotency_key(self) -> str:
        """A key stable across retries and redeliveries of this job: the host's id or the entry."""
        if self.job.id is not None:
            return f"id:{self.job.id}"
        return f"entry:{self.job.entry or self.message_id}"
