"""The configured email providers, built from Settings in the order TASKMASTER_EMAIL_PROVIDERS names them."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

from jobs.email.providers.base import Provider
from jobs.email.providers.outbox import OutboxProvider
from worker.errors import ConfigError
from worker.settings import Settings


def build_providers(settings: Settings, *, smtp_ssl_context: ssl.SSLContext | None = None) -> list[Provider]:
    """Every provider of ``settings.email_providers``, first choice first; ConfigError if one lacks a setting.

    ``smtp_ssl_context`` replaces the system's certificate authorities for SMTP (tests, private CAs).
    """
    check_provider_settings(settings)
    # Imported here, not at the top: only the configured providers' client libraries (the
    # sendgrid library alone is ~9 MB) load into the worker processes.
    from jobs.email.providers.postmark import PostmarkProvider
    from jobs.email.providers.resend import ResendProvider
    from jobs.email.providers.sendgrid import SendGridProvider

    builders: dict[str, Callable[[], Provider]] = {
        "outbox": lambda: OutboxProvider(settings.outbox_dir),
        "smtp": lambda: _smtp(settings, smtp_ssl_context),
        "sendgrid": lambda: SendGridProvider(
            _secret(settings, "sendgrid_api_key"),
            base_url=settings.sendgrid_base_url,
            timeout_s=settings.provider_timeout,
        ),
        "postmark": lambda: PostmarkProvider(
            _secret(settings, "postmark_server_token"),
            base_url=settings.postmark_base_url,
            timeout_s=settings.provider_timeout,
        ),
        "resend": lambda: ResendProvider(
            _secret(settings, "resend_api_key"),
            base_url=settings.resend_base_url,
            timeout_s=settings.provider_timeout,
        ),
    }
    return [builders[name]() for name in settings.email_providers]


def check_provider_settings(settings: Settings) -> None:
    """Raise ConfigError naming every setting the configured providers miss or get wrong."""
    problems: list[str] = []
    for name in settings.email_providers:
        if name == "smtp":
            if not settings.smtp_host:
                problems.append("TASKMASTER_SMTP_HOST: needed by the smtp provider")
            if settings.smtp_username and settings.smtp_password is None:
                problems.append("TASKMASTER_SMTP_PASSWORD: needed with TASKMASTER_SMTP_USERNAME")
        elif name in ("sendgrid", "postmark", "resend"):
            secret = {
                "sendgrid": "sendgrid_api_key",
                "postmark": "postmark_server_token",
                "resend": "resend_api_key",
            }
            if getattr(settings, secret[name]) is None:
                problems.append(f"TASKMASTER_{secret[name].upper()}: needed by the {name} provider")
            url_setting = f"{name}_base_url"
            problem = _base_url_problem(getattr(settings, url_setting))
            if problem:
                problems.append(f"TASKMASTER_{url_setting.upper()}: {problem}")
    if problems:
        raise ConfigError("invalid email provider configuration:\n  " + "\n  ".join(problems))


def _base_url_problem(url: str) -> str | None:
    """Scheme, host and port only: the clients append the API's own paths."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected http(s)://host[:port], got {url!r}"
    if parts.username or parts.password:
        return "must not carry credentials"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"give scheme, host and port only (the API paths are added), got {url!r}"
    return None


def _secret(settings: Settings, name: str) -> str:
    value = getattr(settings, name)
    return str(value.get_secret_value())


def _smtp(settings: Settings, ssl_context: ssl.SSLContext | None) -> Provider:
    from jobs.email.providers.smtp import SMTPProvider

    return SMTPProvider(
        settings.smtp_host or "",
        settings.smtp_port,
        tls=settings.smtp_tls,
        timeout_s=settings.provider_timeout,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        ssl_context=ssl_context,
    )
