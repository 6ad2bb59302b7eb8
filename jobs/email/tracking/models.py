"""The data of `provider.event`, `suppression.add` and `suppression.delete`, as the host sends it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from jobs.email.models import Address
from jobs.email.tracking.normalize import normalize
from jobs.email.tracking.verify import header_map, verify
from worker.settings import Settings


class ProviderEventData(BaseModel):
    """A provider's delivery webhook, forwarded raw: verified at intake, as the provider documents."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["sendgrid", "postmark", "resend"]
    headers: dict[str, str] = Field(
        description="the HTTP headers as the host received them (names are compared case-insensitively)"
    )
    body: str = Field(description="the raw request body, byte for byte: signatures cover it exactly")

    @model_validator(mode="after")
    def _verify(self, info: ValidationInfo) -> ProviderEventData:
        context = info.context or {}
        if context.get("stage") == "worker":
            # Verified at intake; what reaches the worker comes from the daemon's own queue. A
            # second check there would also refuse good events that waited out the Svix tolerance.
            return self
        settings = context.get("settings")
        if not isinstance(settings, Settings):
            raise ValueError(
                "cannot verify the provider event without the daemon's settings: the intake verifies it"
                " (`taskmaster-worker enqueue --no-check` leaves it to the intake)"
            )
        verify(self.provider, self.headers, self.body, settings, now_s=_received_s(context.get("entry")))
        normalize(self.provider, header_map(self.headers), self.body)
        # Postmark's credentials have done their work: they do not travel on in the queue.
        self.headers = {
            name: value for name, value in self.headers.items() if name.lower() != "authorization"
        }
        return self


def _received_s(entry: object) -> float | None:
    """When the host added the event to the intake, from its entry id ("<ms>-<seq>"), if given.

    Svix's timestamp tolerance is then measured at receipt, so that events that waited in the
    intake stream while no daemon ran are not refused for their age; without it, at now.
    """
    if isinstance(entry, str):
        ms, dash, seq = entry.partition("-")
        if dash and ms.isdigit() and seq.isdigit():
            return int(ms) / 1000
    return None


class PurgeEvents(BaseModel):
    """No data: the retention is TASKMASTER_RETENTION."""

    model_config = ConfigDict(extra="forbid")


class SuppressionAdd(BaseModel):
    """Suppress an address: no email goes to it until `suppression.delete`."""

    model_config = ConfigDict(extra="forbid")

    address: Address
    reason: Literal["bounce", "complaint", "manual"] = "manual"


class SuppressionDelete(BaseModel):
    """Lift the suppression of an address (one that bounced hard, complained, or was added)."""

    model_config = ConfigDict(extra="forbid")

    address: Address
