"""The data of the webhook job types, as the host (or the notifications capability) sends it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    ValidationInfo,
    field_serializer,
    field_validator,
)
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from jobs.webhooks.signing import secret_key
from jobs.webhooks.targets import refusal
from worker.crypto import DecryptionError, SecretBox

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


# The secret as the intake hands it to the worker: Fernet-encrypted with TASKMASTER_SECRET_KEY, so
# that it is never in plain text in the queue (nor in a dead letter). Only the daemon makes these.
SEALED = "sealed:"


def _unseal(value: object, info: ValidationInfo) -> object:
    """The worker's copy of a sealed secret, opened; the host's own secret is never sealed."""
    if not isinstance(value, str) or not value.startswith(SEALED):
        return value
    context: Any = info.context or {}
    settings = context.get("settings")
    if context.get("stage") == "intake" or settings is None:
        raise ValueError("must start with whsec_")  # a host cannot seal: only the daemon has the key
    try:
        return SecretBox.from_settings(settings).decrypt(value.removeprefix(SEALED).encode())
    except DecryptionError:
        raise ValueError(
            "the sealed secret does not decrypt with TASKMASTER_SECRET_KEY: was the key changed"
            " while the job was queued? Submit the upsert again"
        ) from None


class EndpointUpsert(BaseModel):
    """An outbound webhook endpoint: where to POST, the signing secret, whose and which events."""

    # A rejected secret must not come back in an error message (the rejected stream, logs).
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    endpoint_id: EndpointId
    url: Annotated[str, Field(max_length=MAX_URL_CHARS), AfterValidator(_http_url)]
    # Standard Webhooks: "whsec_" + base64 of 24 to 64 random bytes. A SecretStr so that it
    # never shows in a repr or a log line.
    secret: Annotated[SecretStr, BeforeValidator(_unseal), AfterValidator(_whsec)]
    user_id: EndpointId | None = None  # None: every user's events
    categories: list[Category] = Field(default_factory=list, max_length=100)  # empty: all

    @field_serializer("secret", when_used="json")
    def _reveal(self, value: SecretStr, info: SerializationInfo) -> str:
        """Sealed when the intake hands the job to the worker; plain otherwise."""
        context: Any = info.context or {}
        settings = context.get("settings")
        if context.get("stage") == "intake" and settings is not None:
            return SEALED + SecretBox.from_settings(settings).encrypt(value.get_secret_value()).decode()
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
