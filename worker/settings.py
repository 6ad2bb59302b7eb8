"""Settings: read once at start-up into one typed object and passed down.

Sources, highest priority first: keyword arguments, environment variables (``TASKMASTER_``),
``.env`` in the working directory, files in ``$CREDENTIALS_DIRECTORY`` (systemd credentials),
then the defaults below. Nothing else in the daemon reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.durations import format_duration, parse_duration_s
from worker.errors import ConfigError

DEFAULT_EMAIL_FROM = "taskmaster-worker@example.com"
EMAIL_PROVIDERS = ("outbox", "smtp", "sendgrid", "postmark", "resend")
ENV_PREFIX = "TASKMASTER_"

Seconds = Annotated[float, BeforeValidator(parse_duration_s)]


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]


class Settings(BaseSettings):
    """Every setting of the daemon; the README documents each one and its default."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    # Where state lives.
    data_dir: Path = Path("./var")
    redis_url: SecretStr | None = None
    database_url: SecretStr | None = None
    redis_prefix: str = Field(default="taskmaster", pattern=r"^[A-Za-z0-9_.-]+$")
    schedules_file: Path = Path("./schedules.yaml")

    # Operations.
    http_addr: str = "127.0.0.1:9464"
    log_format: Literal["json", "console"] | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout: Seconds = 30.0
    job_modules: CsvList = Field(default_factory=lambda: ["jobs.email"])

    # Workers: 2 processes of 8 threads suit a 2-core machine whose jobs mostly wait on I/O.
    processes: int = Field(default=2, ge=1, le=64)
    threads: int = Field(default=8, ge=1, le=256)
    worker_memory_limit_mb: int = Field(default=512, ge=64)
    worker_heartbeat_timeout: Seconds = 20.0
    maintenance_interval: Seconds = 5.0

    # Intake.
    intake_max_bytes: int = Field(default=256 * 1024, ge=1024)
    intake_batch: int = Field(default=200, ge=1, le=10_000)
    intake_claim_idle: Seconds = 15.0
    idempotency_ttl: Seconds = 7 * 86400.0
    rejected_maxlen: int = Field(default=100_000, ge=100)
    events_maxlen: int = Field(default=100_000, ge=100)

    # Retries.
    job_max_retries: int = Field(default=12, ge=0)
    job_min_backoff: Seconds = 1.0
    job_max_backoff: Seconds = 3600.0
    job_max_age: Seconds = 86400.0
    job_time_limit: Seconds = 600.0
    not_ready_max_age: Seconds = 600.0
    dead_letter_ttl: Seconds = 7 * 86400.0

    # Scheduler.
    scheduler_lock_ttl: Seconds = 10.0

    # Email.
    email_from: str = DEFAULT_EMAIL_FROM
    email_providers: CsvList = Field(default_factory=lambda: ["outbox"])

    @field_validator("http_addr")
    @classmethod
    def _check_addr(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9464, got {value!r}")
        return value

    @field_validator("email_providers")
    @classmethod
    def _check_providers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one provider, such as outbox")
        unknown = [name for name in value if name not in EMAIL_PROVIDERS]
        if unknown:
            raise ValueError(f"unknown provider {unknown[0]!r}; use {', '.join(EMAIL_PROVIDERS)}")
        if len(set(value)) != len(value):
            raise ValueError("names a provider twice")
        return value

    @model_validator(mode="after")
    def _check_email_from(self) -> Settings:
        real = [p for p in self.email_providers if p != "outbox"]
        if real and self.email_from == DEFAULT_EMAIL_FROM:
            raise ValueError(
                f"TASKMASTER_EMAIL_FROM is still the default {DEFAULT_EMAIL_FROM!r} while real providers"
                f" ({', '.join(real)}) are configured: mail from it would not be deliverable"
            )
        return self

    # Derived values, computed from the settings above.
    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{(self.data_dir / 'taskmaster.db').resolve()}"

    @property
    def http_host_port(self) -> tuple[str, int]:
        host, _, port = self.http_addr.rpartition(":")
        return host.strip("[]"), int(port)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings, or raise ConfigError naming each bad variable and what is wrong."""
    env = os.environ if environ is None else environ
    secrets_dir = env.get("CREDENTIALS_DIRECTORY")
    try:
        if environ is not None:
            # Tests pass their own environment: read only it (and no .env file).
            values: dict[str, Any] = {
                key[len(ENV_PREFIX) :].lower(): value
                for key, value in environ.items()
                if key.upper().startswith(ENV_PREFIX)
            }
            values.update(overrides)
            return Settings(_env_file=None, _secrets_dir=secrets_dir, **values)
        return Settings(_secrets_dir=secrets_dir, **overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        loc = error.get("loc") or ()
        name = ENV_PREFIX + str(loc[0]).upper() if loc else "configuration"
        message = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        shown = "" if (loc and loc[0] in SECRET_FIELDS) or isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"{name}: {message}{shown}" if loc else message)
    return "invalid configuration:\n  " + "\n  ".join(lines)


SECRET_FIELDS = {"redis_url", "database_url"}
DURATION_FIELDS = {
    name
    for name, field in Settings.model_fields.items()
    if any(getattr(meta, "func", None) is parse_duration_s for meta in field.metadata)
}


def masked(settings: Settings) -> dict[str, str]:
    """The effective configuration as environment variables, secrets masked, for `config`."""
    out: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            text = _mask_url(value.get_secret_value())
        elif value is None:
            text = "(unset)"
        elif isinstance(value, list):
            text = ",".join(value)
        elif name in DURATION_FIELDS:
            text = format_duration(value)
        else:
            text = str(value)
        out[ENV_PREFIX + name.upper()] = text
    return out


def _mask_url(value: str) -> str:
    """Hide the password of a URL, keep the rest so the operator can see where it points."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(value)
    except ValueError:
        return "********"
    if not parts.scheme:
        return "********"
    if parts.password is None:
        return value
    netloc = parts.netloc.replace(f":{parts.password}@", ":********@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
