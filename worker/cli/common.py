"""What every command shares: settings, exit codes, output."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from worker.errors import ConfigError
from worker.logging import configure_logging
from worker.settings import Settings, load_settings

# Exit codes, documented in the README and in `taskmaster-worker --help`.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2  # invalid configuration or schedules file: restarting will not help
EXIT_UNAVAILABLE = 3  # Redis or the database could not be reached


def die(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    print(f"taskmaster-worker: {message}", file=sys.stderr)
    raise SystemExit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        die(str(exc), EXIT_CONFIG)
    configure_logging(settings.log_level, settings.log_format)
    return settings
