"""Job types that exist only in tests, registered for the duration of one test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel

from worker.registry import JobType, registry


class Anything(BaseModel):
    key: str = ""
    n: int = 0


@contextmanager
def registered(*job_types: JobType[Any]) -> Iterator[None]:
    for job_type in job_types:
        registry.add(job_type)
    try:
        yield
    finally:
        for job_type in job_types:
            registry._types.pop(job_type.name, None)
