"""Every Redis key the runtime uses, in one place. ``prefix`` is TASKMASTER_REDIS_PREFIX."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    # The public contract (DESIGN.md): streams the host writes and reads.
    @property
    def intake(self) -> str:
        return f"{self.prefix}:intake"

    @property
    def rejected(self) -> str:
        return f"{self.prefix}:intake:rejected"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    # Internal state.
    intake_group = "taskmaster-worker"

    def idempotency(self, key: str) -> str:
        """Marks a job id (or scheduled fire) as accepted; kept TASKMASTER_IDEMPOTENCY_TTL."""
        return f"{self.prefix}:idem:{key}"

    @property
    def dramatiq_namespace(self) -> str:
        """Dramatiq's own keys (queues, acks, heartbeats, dead letters) live under this."""
        return f"{self.prefix}:dq"

    def queue(self, queue_name: str) -> str:
        return f"{self.dramatiq_namespace}:{queue_name}"

    def queue_messages(self, queue_name: str) -> str:
        return f"{self.dramatiq_namespace}:{queue_name}.msgs"

    def dead_letters(self, queue_name: str) -> str:
        return f"{self.dramatiq_namespace}:{queue_name}.XQ"

    def dead_letter_messages(self, queue_name: str) -> str:
        return f"{self.dramatiq_namespace}:{queue_name}.XQ.msgs"

    @property
    def heartbeats(self) -> str:
        return f"{self.dramatiq_namespace}:__heartbeats__"

    @property
    def templates_token(self) -> str:
        """Replaced by every stored email template version: processes read templates afresh."""
        return f"{self.prefix}:templates:token"

    # Batch lanes (worker/lanes.py): a stream of jobs per job type with a batch handler.
    lane_group = "taskmaster-worker"

    def lane(self, job_type: str) -> str:
        return f"{self.prefix}:lane:{job_type}"

    # Jobs held until a due time (worker/due.py).
    @property
    def due(self) -> str:
        """Sorted set: item key -> due time (ms)."""
        return f"{self.prefix}:due"

    @property
    def due_items(self) -> str:
        """Hash: item key -> the message to release, as JSON."""
        return f"{self.prefix}:due:items"

    # Scheduler.
    @property
    def scheduler_leader(self) -> str:
        return f"{self.prefix}:scheduler:leader"

    @property
    def scheduler_state(self) -> str:
        """Hash: entry name -> ISO time of its last fire."""
        return f"{self.prefix}:scheduler:last"

    @property
    def scheduler_status(self) -> str:
        """Hash: next fire times, last reload error, for `status`."""
        return f"{self.prefix}:scheduler:status"

    def schedule_running(self, entry: str) -> str:
        return f"{self.prefix}:scheduler:running:{entry}"

    @property
    def daemons(self) -> str:
        """Sorted set of live daemons (id -> last seen ms), for `status`."""
        return f"{self.prefix}:daemons"
