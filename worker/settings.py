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


def _split_durations(value: object) -> object:
    parts = _split_csv(value)
    if isinstance(parts, list):
        return [parse_duration_s(part) for part in parts]
    return parts


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
    job_modules: CsvList = Field(
        default_factory=lambda: ["jobs.email", "jobs.webhooks", "jobs.push", "jobs.notifications"]
    )

    # Workers: 2 processes of 16 threads suit a 2-core machine whose jobs mostly wait on I/O
    # (a provider answering in 50 ms: 16 threads in flight make 320 emails/s per process).
    processes: int = Field(default=2, ge=1, le=64)
    threads: int = Field(default=16, ge=1, le=256)
    # Processes that take only the batch lanes (notification.send decisions, worker/lanes.py):
    # away from the worker threads' GIL, a batch is decided in milliseconds. 0: the worker
    # processes take the lanes too.
    lane_processes: int = Field(default=1, ge=0, le=16)
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

    # Secrets at rest (OAuth tokens, webhook signing secrets): a Fernet key. Unset: a key is
    # generated once into <data dir>/secret.key (fine for one machine; set it for several).
    secret_key: SecretStr | None = None

    # Email.
    email_from: str = DEFAULT_EMAIL_FROM
    email_providers: CsvList = Field(default_factory=lambda: ["outbox"])
    provider_timeout: Seconds = 10.0
    sendgrid_api_key: SecretStr | None = None
    sendgrid_base_url: str = "https://api.sendgrid.com"
    sendgrid_rate_per_s: float = Field(default=100.0, gt=0)
    sendgrid_webhook_public_key: SecretStr | None = None
    postmark_server_token: SecretStr | None = None
    postmark_base_url: str = "https://api.postmarkapp.com"
    postmark_rate_per_s: float = Field(default=50.0, gt=0)
    postmark_webhook_user: str | None = None
    postmark_webhook_password: SecretStr | None = None
    resend_api_key: SecretStr | None = None
    resend_base_url: str = "https://api.resend.com"
    resend_rate_per_s: float = Field(default=2.0, gt=0)
    resend_webhook_secret: SecretStr | None = None
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: Literal["none", "starttls", "ssl"] = "starttls"
    smtp_rate_per_s: float = Field(default=10.0, gt=0)

    # Circuit breakers of outside services (per provider, shared through Redis).
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_window: Seconds = 60.0
    breaker_cooldown: Seconds = 30.0

    # Push (Firebase Cloud Messaging HTTP v1).
    fcm_project_id: str | None = None
    fcm_credentials_file: Path | None = None
    fcm_base_url: str = "https://fcm.googleapis.com"
    google_token_uri: str = "https://oauth2.googleapis.com/token"

    # Outbound webhooks.
    webhook_retry_schedule: Annotated[list[float], NoDecode, BeforeValidator(_split_durations)] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0, 21600.0]
    )
    webhook_allow_private: bool = False
    webhook_timeout: Seconds = 10.0
    webhook_max_response_bytes: int = Field(default=64 * 1024, ge=0)
    webhook_disable_after: Seconds = 5 * 86400.0

    # Notifications.
    digest_window: Seconds = 300.0
    digest_max_items: int = Field(default=50, ge=2)
    rate_user_per_minute: float = Field(default=10.0, gt=0)
    # Room for the rated load: 1,000 notifications/s of which 15% (high, urgent) go out at once.
    rate_global_per_second: float = Field(default=200.0, gt=0)
    rate_global_burst: int = Field(default=400, ge=1)
    retention: Seconds = 90 * 86400.0

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


SECRET_FIELDS = {
    name for name, field in Settings.model_fields.items() if field.annotation in (SecretStr, SecretStr | None)
}
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
            secret = value.get_secret_value()
            text = _mask_url(secret) if name.endswith("_url") else "********"
        elif value is None:
            text = "(unset)"
        elif isinstance(value, list):
            text = ",".join(format_duration(v) if isinstance(v, float) else str(v) for v in value)
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
