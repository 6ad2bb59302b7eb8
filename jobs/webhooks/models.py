"""The data of the webhook job types, as the host (or the notifications capability) sends it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_serializer,
    field_validator,
)
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from jobs.webhooks.signing import secret_key
from jobs.webhooks.targets import refusal

MAX_URL_CHARS = 2048
EndpointId = Annotated[str, Field(min_length=1, max_length=128)]
Category = Annotated[str, Field(min_length=1, max_length=64)]


def _http_url(value: str) -> str:
    try:
        parsed = parse_url(value)
    except LocationParseError:
        raise ValueError("is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parsed.host:
        raise ValueError("must name a host")
    return value


def _whsec(value: SecretStr) -> SecretStr:
    secret_key(value.get_secret_value())
    return value


class EndpointUpsert(BaseModel):
    """An outbound webhook endpoint: where to POST, the signing secret, whose and which events."""

    # A rejected secret must not come back in an error message (the rejected stream, logs).
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    endpoint_id: EndpointId
    url: Annotated[str, Field(max_length=MAX_URL_CHARS), AfterValidator(_http_url)]
    # Standard Webhooks: "whsec_" + base64 of 24 to 64 random bytes. A SecretStr so that it
    # never shows in a repr or a log line.
    secret: Annotated[SecretStr, AfterValidator(_whsec)]
    user_id: EndpointId | None = None  # None: every user's events
    categories: list[Category] = Field(default_factory=list, max_length=100)  # empty: all

    @field_serializer("secret", when_used="json")
    def _reveal(self, value: SecretStr) -> str:
        # The job travels to the worker as JSON; the worker stores it encrypted.
        return value.get_secret_value()

    @field_validator("url")
    @classmethod
    def _public_literal(cls, value: str, info: ValidationInfo) -> str:
        """Refuse an internal IP literal at intake already; names are checked when connecting."""
        settings: Any = (info.context or {}).get("settings")
        if settings is None or settings.webhook_allow_private:
            return value
        host = (parse_url(value).host or "").strip("[]")
        reason = refusal(host)
        if reason is not None and reason != "not an IP address":
            raise ValueError(f"{host} is a {reason} address (TASKMASTER_WEBHOOK_ALLOW_PRIVATE is off)")
        return value


class EndpointDelete(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint_id: EndpointId


class WebhookDeliver(BaseModel):
    """One delivery of one notification to one endpoint (internal: never accepted at intake)."""

    model_config = ConfigDict(extra="forbid")

    endpoint_id: str
    webhook_id: str  # the same on every attempt: the receiver's idempotency key
    message_id: str  # the notification's, for events
    event_type: str
    body: str  # the exact JSON text sent and signed, the same on every attempt
    attempt: int = Field(default=1, ge=1)
