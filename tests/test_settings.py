"""Settings: defaults, durations, clear errors, secrets masked, credentials directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from worker.durations import format_duration, parse_duration_s
from worker.errors import ConfigError
from worker.settings import load_settings, masked


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("2d", 172800),
        ("45", 45),
        ("1.5", 1.5),
        (10, 10),
        ("250ms", 0.25),
    ],
)
def test_durations_are_read_as_people_write_them(text: str | int, seconds: float) -> None:
    """30s, 5m, 1h, 2d and plain seconds are all durations."""
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "-3", "1h30", True])
def test_bad_durations_say_what_is_accepted(text: object) -> None:
    """A bad duration names the accepted forms."""
    with pytest.raises(ValueError, match="30s, 5m, 1h, 2d"):
        parse_duration_s(text)


def test_format_duration_is_the_shortest_exact_spelling() -> None:
    """Durations print back as people write them."""
    assert [format_duration(s) for s in (30, 300, 3600, 90, 604800, 1.5)] == [
        "30s",
        "5m",
        "1h",
        "90s",
        "1w",
        "1.5s",
    ]


def test_defaults_match_the_contract() -> None:
    """With nothing set, the daemon runs on its embedded defaults."""
    settings = load_settings({})
    assert settings.data_dir == Path("var")
    assert settings.embedded_redis and settings.embedded_database
    assert settings.redis_prefix == "taskmaster"
    assert settings.http_addr == "127.0.0.1:9464"
    assert settings.shutdown_timeout == 30
    assert settings.email_from == "taskmaster-worker@example.com"
    assert settings.email_providers == ["outbox"]
    assert settings.intake_max_bytes == 256 * 1024
    assert settings.idempotency_ttl >= 7 * 86400


def test_invalid_values_name_the_variable_and_the_problem() -> None:
    """Each bad variable is named with what is wrong; secrets are not echoed."""
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "TASKMASTER_SHUTDOWN_TIMEOUT": "soon",
                "TASKMASTER_PROCESSES": "0",
                "TASKMASTER_HTTP_ADDR": "nowhere",
                "TASKMASTER_LOG_FORMAT": "xml",
            }
        )
    message = str(caught.value)
    assert "TASKMASTER_SHUTDOWN_TIMEOUT: invalid duration 'soon'" in message
    assert "TASKMASTER_PROCESSES" in message and "greater than or equal to 1" in message
    assert "TASKMASTER_HTTP_ADDR: expected HOST:PORT" in message
    assert "TASKMASTER_LOG_FORMAT" in message


def test_default_sender_is_refused_with_a_real_provider() -> None:
    """Mail from example.com would not be deliverable: refuse it once a real provider is configured."""
    with pytest.raises(ConfigError, match="TASKMASTER_EMAIL_FROM is still the default"):
        load_settings({"TASKMASTER_EMAIL_PROVIDERS": "sendgrid,smtp"})
    settings = load_settings(
        {"TASKMASTER_EMAIL_PROVIDERS": "sendgrid", "TASKMASTER_EMAIL_FROM": "ops@acme.test"}
    )
    assert settings.email_providers == ["sendgrid"]


def test_config_output_masks_secrets() -> None:
    """`config` shows where Redis and the database are, never their passwords."""
    settings = load_settings(
        {
            "TASKMASTER_REDIS_URL": "redis://:hunter2@redis.internal:6379/0",
            "TASKMASTER_DATABASE_URL": "postgresql+psycopg://app:s3cret@db/app",
        }
    )
    shown = masked(settings)
    assert shown["TASKMASTER_REDIS_URL"] == "redis://:********@redis.internal:6379/0"
    assert shown["TASKMASTER_DATABASE_URL"] == "postgresql+psycopg://app:********@db/app"
    assert shown["TASKMASTER_SHUTDOWN_TIMEOUT"] == "30s"
    assert "hunter2" not in repr(settings) and "s3cret" not in repr(settings)


def test_systemd_credentials_are_read(tmp_path: Path) -> None:
    """A file in $CREDENTIALS_DIRECTORY named after the setting supplies its value."""
    (tmp_path / "taskmaster_redis_url").write_text("redis://:pw@127.0.0.1:1/0")
    settings = load_settings({"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://:pw@127.0.0.1:1/0"


def test_an_invalid_value_stops_the_cli_with_status_2(tmp_path: Path) -> None:
    """Start-up with a bad value exits 2 and names the variable."""
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli.main", "config"],
        env={"TASKMASTER_SHUTDOWN_TIMEOUT": "later", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "TASKMASTER_SHUTDOWN_TIMEOUT: invalid duration 'later'" in result.stderr


def test_unknown_or_unavailable_email_providers_are_refused() -> None:
    """A misspelt provider is a settings error; a provider without its credentials is refused at start-up."""
    with pytest.raises(ConfigError, match="unknown provider 'sendgird'"):
        load_settings({"TASKMASTER_EMAIL_PROVIDERS": "sendgird", "TASKMASTER_EMAIL_FROM": "a@acme.test"})
    from worker.registry import load_job_modules

    registry = load_job_modules(["jobs.email"])
    settings = load_settings(
        {"TASKMASTER_EMAIL_PROVIDERS": "postmark", "TASKMASTER_EMAIL_FROM": "a@acme.test"}
    )
    with pytest.raises(ConfigError, match="TASKMASTER_POSTMARK_SERVER_TOKEN"):
        registry.check_settings(settings)
    registry.check_settings(load_settings({}))
