"""The exception root of the webhooks capability."""

from __future__ import annotations

from worker.errors import TaskmasterError


class WebhookError(TaskmasterError):
    """Root of every error the webhooks capability raises on purpose."""


class TargetRefused(WebhookError):
    """The endpoint's address is internal (private, loopback, link-local...): never connected to."""
