"""The exceptions of delivery tracking, under one root.

Both failures are ValueErrors on purpose: raised inside a pydantic validator at intake, they
become the rejected entry's error message (worker/validation.py).
"""

from __future__ import annotations

from worker.errors import TaskmasterError


class TrackingError(TaskmasterError):
    """Root of every error delivery tracking raises."""


class VerificationFailed(TrackingError, ValueError):
    """A provider webhook did not prove it came from the provider; the message says why."""


class PayloadError(TrackingError, ValueError):
    """A verified webhook body is not in the shape its provider documents."""
