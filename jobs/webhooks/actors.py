"""The webhook job types: endpoint upsert and delete (public), one delivery attempt (internal)."""

from __future__ import annotations

from datetime import UTC, datetime

from jobs.webhooks.delivery import DELIVER, attempt_delivery
from jobs.webhooks.models import EndpointDelete, EndpointUpsert, WebhookDeliver
from jobs.webhooks.store import endpoint_store
from worker.context import JobContext
from worker.logging import get_logger
from worker.registry import job

log = get_logger(__name__)


@job("webhook.endpoint.upsert", EndpointUpsert, queue="default")
def upsert_endpoint(ctx: JobContext, data: EndpointUpsert) -> None:
    """Create or replace an endpoint (enabling it again); a new secret starts a 24 h overlap."""
    rotated = endpoint_store(ctx.runtime).upsert(data)
    log.info("webhook.endpoint_upserted", endpoint_id=data.endpoint_id, rotated=rotated)


@job("webhook.endpoint.delete", EndpointDelete, queue="default")
def delete_endpoint(ctx: JobContext, data: EndpointDelete) -> None:
    existed = endpoint_store(ctx.runtime).delete(data.endpoint_id)
    log.info("webhook.endpoint_deleted", endpoint_id=data.endpoint_id, existed=existed)


@job(DELIVER, WebhookDeliver, queue="default", public=False)
def deliver(ctx: JobContext, data: WebhookDeliver) -> None:
    attempt_delivery(ctx.runtime, data, now=datetime.now(UTC), job=ctx.job)
