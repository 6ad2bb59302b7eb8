"""Every Redis key of the webhooks capability, in one place (``prefix`` is TASKMASTER_REDIS_PREFIX)."""

from __future__ import annotations

from dataclasses import dataclass

# How long deliveries keep signing with an endpoint's previous secret after a rotation.
ROTATION_OVERLAP_S = 24 * 3600


@dataclass(frozen=True)
class WebhookKeys:
    prefix: str

    def previous_secret(self, endpoint_id: str) -> str:
        """String: the endpoint's secret before its last rotation, encrypted; TTL ROTATION_OVERLAP_S."""
        return f"{self.prefix}:webhook:previous-secret:{endpoint_id}"

    def delivered(self, endpoint_id: str, webhook_id: str) -> str:
        """String: set once a delivery got a 2xx, so a redelivered job does not send again."""
        return f"{self.prefix}:webhook:delivered:{endpoint_id}:{webhook_id}"

    # Not Redis keys themselves: names handed to the runtime, which stores them under its own keys.
    @staticmethod
    def enqueue_idempotency(endpoint_id: str, webhook_id: str) -> str:
        """The idempotency key of a delivery's first attempt (worker.submit.enqueue)."""
        return f"webhook:{endpoint_id}:{webhook_id}"

    @staticmethod
    def retry_item(endpoint_id: str, webhook_id: str, attempt: int) -> str:
        """The due-store item of one later attempt: unique per attempt, so a rerun replaces it."""
        return f"webhook:{endpoint_id}:{webhook_id}:{attempt}"
