"""schedules.yaml: loading and validation, with errors that name the file, line and entry.

Format (DESIGN.md, schedules.yaml)::

    timezone: Europe/Berlin          # IANA name, default UTC; the default of every entry
    schedules:
      calendar-sync:                 # entry name: letters, digits, '_', '.', '-'
        job: calendar.sync_all       # a job type or actor known to the registry
        data: {}                     # optional: validated against the job type's model
        cron: "*/15 * * * *"         # five fields, in the entry's time zone (quote a leading *)
        # every: 5m                  # or an interval: 30s, 5m, 1h, 2d or seconds (whole, >= 1s)
        jitter: 30s                  # optional random delay, the same on every daemon
        timezone: UTC                # optional, overrides the top-level one
        misfire_grace: 1h            # default 1h: a fire later than this is dropped, not run
        enabled: true                # default true
        catchup: once                # skip | once | all: fires missed while no scheduler ran
        overlap: skip                # skip | allow: fire while the previous run is not done

Unknown keys are errors. A file that does not exist is not an error: the default schedule
shipped in this package (default.yaml) is used instead, and the path looked for is logged.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from worker.errors import ConfigError
from worker.logging import get_logger
from worker.registry import Registry
from worker.scheduler.entry import DEFAULT_MISFIRE_GRACE_S, DEFAULT_SOURCE, Entry, Schedule
from worker.scheduler.parsing import parse_schedule

__all__ = ["DEFAULT_MISFIRE_GRACE_S", "Entry", "Schedule", "default_text", "load_schedule", "parse_schedule"]

log = get_logger(__name__)


def load_schedule(path: Path, registry: Registry) -> Schedule:
    """Read and validate ``path``, or the packaged default if it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        log.info("schedules file not found, using the default schedule", looked_for=str(path))
        return parse_schedule(default_text(), DEFAULT_SOURCE, registry, is_default=True)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the schedules file: {exc}") from exc
    return parse_schedule(text, str(path), registry)


def default_text() -> str:
    return resources.files("worker.scheduler").joinpath("default.yaml").read_text(encoding="utf-8")
