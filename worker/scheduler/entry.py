"""One validated schedules.yaml entry, the schedule they make, and the format's fixed vocabulary."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from worker.scheduler.timing import Trigger

# A fire more than an hour late is more likely to surprise than to help (a nightly report at
# noon); entries whose work stays useful for longer say so with their own misfire_grace.
DEFAULT_MISFIRE_GRACE_S = 3600.0
DEFAULT_SOURCE = "worker/scheduler/default.yaml"
TOP_KEYS = ("timezone", "schedules")
ENTRY_KEYS = (
    "job",
    "data",
    "cron",
    "every",
    "jitter",
    "timezone",
    "misfire_grace",
    "enabled",
    "catchup",
    "overlap",
)
CATCHUP = ("skip", "once", "all")
OVERLAP = ("skip", "allow")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Catchup = Literal["skip", "once", "all"]
Overlap = Literal["skip", "allow"]


@dataclass(frozen=True)
class Entry:
    """One validated entry; two entries are equal when they would fire alike."""

    name: str
    job: str
    trigger: Trigger
    timezone: str
    data: dict[str, Any] = field(default_factory=dict)
    jitter_s: float = 0.0
    misfire_grace_s: float = DEFAULT_MISFIRE_GRACE_S
    enabled: bool = True
    catchup: Catchup = "once"
    overlap: Overlap = "skip"
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Schedule:
    timezone: str
    entries: dict[str, Entry]
    source: str
    is_default: bool = False
