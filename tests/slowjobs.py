"""A job module for daemon tests: `test.slow` holds its thread until the test releases it.

Loaded by a daemon under test with TASKMASTER_JOB_MODULES=jobs.email,tests.slowjobs.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from worker.context import JobContext
from worker.registry import job


class Slow(BaseModel):
    key: str


@job("test.slow", Slow)
def slow(ctx: JobContext, data: Slow) -> None:
    marks = ctx.settings.data_dir / "marks"
    marks.mkdir(parents=True, exist_ok=True)
    (marks / f"started-{data.key}-{time.monotonic_ns()}").touch()
    deadline = time.monotonic() + 120
    while not (marks / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (marks / f"done-{data.key}").touch()
