"""structlog, configured once: JSON lines for machines, console for people, secrets redacted."""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"

# Keys whose values are secrets whatever they look like.
_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|authorization|auth|credential|cookie|private[_-]?key|signature)",
    re.IGNORECASE,
)
# Values that look like secrets wherever they appear inside a string.
_SECRET_VALUE = [
    # Authorization header values.
    re.compile(r"(?i:\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,})"),
    # JSON Web Tokens (OAuth access and id tokens).
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    # Provider API keys: SendGrid, Resend, Google OAuth tokens, Standard Webhooks secrets.
    re.compile(r"\bSG\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    re.compile(r"\bre_[A-Za-z0-9_]{10,}"),
    re.compile(r"\bya29\.[A-Za-z0-9._-]{10,}"),
    re.compile(r"\b1//[A-Za-z0-9._-]{10,}"),
    re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}"),
    # key=value pairs in query strings and messages.
    re.compile(
        r"(?i:\b((?:access_|refresh_|id_)?token|password|passwd|secret|api_?key|client_secret)=[^&\s\"']+)"
    ),
    # Passwords inside URLs.
    re.compile(r"(?<=://)[^/\s:@]*:[^/\s@]+(?=@)"),
]

# Any of them: one search tells most strings (ids, names, reasons) apart from a secret's.
_ANY_SECRET_VALUE = re.compile("|".join(f"(?:{pattern.pattern})" for pattern in _SECRET_VALUE))


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether values under ``key`` are secrets whatever they look like (keys are few: cached)."""
    return _SECRET_KEY.search(key) is not None


# Short strings come back all day (user ids, channels, reasons): their answers are kept.
_SHORT = 64
_short_answers: dict[str, str] = {}


def redact_text(text: str) -> str:
    if len(text) > _SHORT:
        return _redacted(text)
    answer = _short_answers.get(text)
    if answer is None:
        if len(_short_answers) >= 20_000:  # bounded: start over rather than grow
            _short_answers.clear()
        answer = _short_answers[text] = _redacted(text)
    return answer


def _redacted(text: str) -> str:
    if _ANY_SECRET_VALUE.search(text) is None:
        return text
    for pattern in _SECRET_VALUE:
        text = pattern.sub(_replacement, text)
    return text


def _replacement(match: re.Match[str]) -> str:
    whole = match.group(0)
    if "=" in whole and not whole.startswith(("eyJ", "SG.", "re_", "whsec_")):
        name = whole.split("=", 1)[0]
        if _SECRET_KEY.search(name):
            return f"{name}={REDACTED}"
    scheme = whole.split(None, 1)
    if len(scheme) == 2 and scheme[0].lower() in {"bearer", "basic", "token"}:
        return f"{scheme[0]} {REDACTED}"
    return REDACTED


def redact(value: Any, depth: int = 0) -> Any:
    """Return ``value`` with every secret-looking part replaced, walking into containers."""
    if depth > 8:
        return value
    kind = type(value)
    # Exact types first: events and log lines are mostly short strings in plain dicts and lists.
    if kind is str or isinstance(value, str):
        return redact_text(value)
    if kind is dict or isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if isinstance(k, str) and v and is_secret_key(k):
                out[k] = REDACTED
            else:
                out[k] = redact_text(v) if type(v) is str else redact(v, depth + 1)
        return out
    if kind is list:
        return [redact(v, depth + 1) for v in value]
    if isinstance(value, list | tuple):
        return type(value)(redact(v, depth + 1) for v in value)
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no secret reaches a log line, wherever it hides in the event."""
    for key in list(event_dict):
        value = event_dict[key]
        if key in {"exception", "event"} and isinstance(value, str):
            event_dict[key] = redact_text(value)
        elif _SECRET_KEY.search(key) and key not in {"event"} and value:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = redact(value)
    return event_dict


def configure_logging(level: str = "info", fmt: str | None = None) -> None:
    """Configure structlog and the standard library's logging (Dramatiq, APScheduler) once."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared[:-2],
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared[:-2],
            processors=[
                structlog.processors.format_exc_info,
                redact_processor,
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Dramatiq logs every retry at INFO and its consumers chat at DEBUG; keep them to warnings.
    logging.getLogger("dramatiq").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
