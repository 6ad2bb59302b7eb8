"""The exception root of the runtime, and the control-flow exceptions jobs raise."""

from __future__ import annotations


class TaskmasterError(Exception):
    """Root of every error the runtime raises on purpose."""


class ConfigError(TaskmasterError):
    """A setting or a file given by the operator is invalid; start-up stops with exit status 2."""


class RedisUnavailable(TaskmasterError):
    """Redis did not answer."""


class DatabaseUnavailable(TaskmasterError):
    """The SQL database did not answer."""


class SchemaBehind(TaskmasterError):
    """The database schema is older than this release; `db upgrade` fixes it."""


class NotReady(TaskmasterError):
    """Something the job needs is not there yet (a user whose upsert is still on its way).

    Raised by a job; the runtime retries it with backoff for ``TASKMASTER_NOT_READY_MAX_AGE``
    before it fails with an event. Never logged as an error while retrying.
    """


class PermanentError(TaskmasterError):
    """The job cannot succeed however often it is tried: fail it now, do not retry."""
