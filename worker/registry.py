"""The registry of job types: each capability declares the types it handles.

A capability module (``jobs/<name>/actors.py``) declares a job type with the decorator::

    @job("email.send", EmailSend, queue="default")
    def send_email(ctx: JobContext, data: EmailSend) -> None: ...

The runtime imports the modules named by TASKMASTER_JOB_MODULES, then turns each declared type
into a Dramatiq actor on its broker; intake validates ``data`` against the model. A type declared
with ``public=False`` is an internal actor (fired by schedules.yaml, never accepted at intake).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from worker.errors import ConfigError

if TYPE_CHECKING:
    from worker.context import JobContext
    from worker.lanes import LaneJob
    from worker.runtime import Runtime
    from worker.settings import Settings

QUEUES = ("urgent", "default", "bulk")
# Dramatiq orders the work queue of a process by actor priority (lower first), so a job of the
# urgent queue is taken before any default or bulk job already fetched.
QUEUE_PRIORITY = {"urgent": 0, "default": 50, "bulk": 100}

M = TypeVar("M", bound=BaseModel)
Handler = Callable[["JobContext", Any], None]
# Jobs taken from a batch lane, many at once (worker/lanes.py); returns those to try alone later.
BatchHandler = Callable[["Runtime", list["LaneJob"]], list["LaneJob"]]


@dataclass(frozen=True)
class JobType(Generic[M]):
    name: str
    model: type[M]
    handler: Handler
    queue: str = "default"
    public: bool = True
    # Optional: pick the queue per job from its data (an urgent notification, a bulk digest).
    route: Callable[[M], str] | None = None
    # Per-type overrides of the retry settings (None: TASKMASTER_JOB_* defaults).
    max_retries: int | None = None
    time_limit_s: float | None = None
    queues: tuple[str, ...] = field(default=())
    # Optional: the jobs of the default queue go through a batch lane to this handler.
    batch: BatchHandler | None = None

    def queue_for(self, data: M) -> str:
        return self.route(data) if self.route is not None else self.queue

    def actor_name(self, queue: str) -> str:
        return self.name if queue == self.queue else f"{self.name}@{queue}"

    def all_queues(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.queue, *self.queues)))


class Registry:
    def __init__(self) -> None:
        self._types: dict[str, JobType[Any]] = {}
        self._checks: list[Callable[[Any], None]] = []
        self._commands: list[Callable[[Any], None]] = []

    def cli_command(self, register: Callable[[Any], None]) -> Callable[[Any], None]:
        """Declare a capability's CLI command: ``register(subparsers)`` adds its parser."""
        if register not in self._commands:
            self._commands.append(register)
        return register

    def register_commands(self, subparsers: Any) -> None:
        for register in self._commands:
            register(subparsers)

    def settings_check(self, check: Callable[[Any], None]) -> Callable[[Any], None]:
        """Declare a start-up check of the settings a capability needs; it raises ConfigError."""
        if check not in self._checks:
            self._checks.append(check)
        return check

    def check_settings(self, settings: Any) -> None:
        """Run every capability's check (daemon start-up and `config --check`)."""
        for check in self._checks:
            check(settings)

    def add(self, job_type: JobType[Any]) -> None:
        for queue in job_type.all_queues():
            if queue not in QUEUES:
                raise ValueError(f"job type {job_type.name!r}: unknown queue {queue!r}; use one of {QUEUES}")
        existing = self._types.get(job_type.name)
        if existing is not None and existing.handler is not job_type.handler:
            raise ValueError(f"job type {job_type.name!r} is declared twice")
        self._types[job_type.name] = job_type

    def job(
        self,
        name: str,
        model: type[M],
        *,
        queue: str = "default",
        public: bool = True,
        route: Callable[[M], str] | None = None,
        queues: Iterable[str] = (),
        max_retries: int | None = None,
        time_limit_s: float | None = None,
        batch: BatchHandler | None = None,
    ) -> Callable[[Callable[[JobContext, M], None]], Callable[[JobContext, M], None]]:
        def decorate(fn: Callable[[JobContext, M], None]) -> Callable[[JobContext, M], None]:
            self.add(
                JobType(
                    name=name,
                    model=model,
                    handler=fn,
                    queue=queue,
                    public=public,
                    route=route,
                    queues=tuple(queues),
                    max_retries=max_retries,
                    time_limit_s=time_limit_s,
                    batch=batch,
                )
            )
            return fn

        return decorate

    def get(self, name: str) -> JobType[Any] | None:
        return self._types.get(name)

    def public(self) -> list[JobType[Any]]:
        return [t for t in self._types.values() if t.public]

    def all(self) -> list[JobType[Any]]:
        return list(self._types.values())

    def lanes(self) -> list[str]:
        """The job types with a batch lane (worker/lanes.py)."""
        return sorted(t.name for t in self._types.values() if t.batch is not None)

    def names(self, *, public_only: bool = False) -> list[str]:
        return sorted(t.name for t in self._types.values() if t.public or not public_only)

    def json_schemas(self) -> dict[str, Any]:
        """The JSON Schema of every public type's ``data``, for host-side validation."""
        return {t.name: t.model.model_json_schema() for t in sorted(self.public(), key=lambda t: t.name)}


registry = Registry()
job = registry.job
settings_check = registry.settings_check
cli_command = registry.cli_command


def load_checked(settings: Settings, *, schedule: bool = True) -> Registry:
    """The registry of the settings' job modules, after every capability's settings check and,
    with ``schedule``, the schedules file's validation; ConfigError on the first problem.

    What `run` checks before starting and `config --check` checks for systemd's ExecStartPre.
    """
    registry = load_job_modules(settings.job_modules)
    registry.check_settings(settings)
    if schedule:
        from worker.scheduler.config import load_schedule

        load_schedule(settings.schedules_file, registry)
    return registry


def load_job_modules(modules: Iterable[str]) -> Registry:
    """Import each capability module so its job types register; return the registry."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"TASKMASTER_JOB_MODULES: cannot import {module!r}: {exc}") from exc
    return registry
