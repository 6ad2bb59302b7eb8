"""Provider webhook bodies turned into normalised tracking events.

Each provider's names map onto seven kinds: delivered, bounced (hard or soft), complained,
opened, clicked, deferred, dropped. What a provider sends beyond those (SendGrid's
`processed` and unsubscribes, Postmark's SubscriptionChange, Resend's `email.sent`) is left out.

The dedupe key of each event (``event_id``), as each provider allows:

- SendGrid: ``sg_event_id``, unique per event; one body holds several events.
- Postmark: no event id on deliveries, opens and clicks, so the key is
  ``RecordType:MessageID:<time of the event>:<recipient>``. A re-delivered webhook repeats all
  four; two real opens differ in their time. The recipient is there because one message to
  several recipients has one delivery record per recipient.
- Resend: the ``svix-id`` header, which Svix keeps the same across re-deliveries.

A key longer than the column is replaced by its SHA-256, so that it still dedupes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from jobs.email.tracking.errors import PayloadError

Kind = Literal["delivered", "bounced", "complained", "opened", "clicked", "deferred", "dropped"]
Suppression = Literal["bounce", "complaint"]
PROVIDERS = ("sendgrid", "postmark", "resend")
# The keys under which email.send gives the provider our delivery's id or idempotency key:
# SendGrid `custom_args` (echoed as a top-level field of each event), Postmark `Metadata`.
# `taskmaster_delivery` is the contract's name; the providers of this release send `delivery_id`.
DELIVERY_REF_KEYS = ("taskmaster_delivery", "delivery_id")
MAX_EVENT_ID_CHARS = 255


@dataclass(frozen=True)
class TrackingEvent:
    provider: str
    event_id: str
    kind: Kind
    recipient: str
    provider_message_id: str | None = None
    delivery_ref: str | None = None
    occurred_at: datetime | None = None
    bounce: Literal["hard", "soft"] | None = None
    detail: str | None = None  # the provider's reason or SMTP response
    url: str | None = None  # the link clicked
    suppression: Suppression | None = None  # put the recipient on the suppression list for this


def normalize(provider: str, headers: Mapping[str, str], body: str) -> list[TrackingEvent]:
    """The events of one verified webhook; ``headers`` by lower-cased name. Raises PayloadError."""
    if provider == "sendgrid":
        return _sendgrid(_json(body, "SendGrid"))
    if provider == "postmark":
        return _postmark(_json(body, "Postmark"))
    if provider == "resend":
        svix_id = headers.get("svix-id")
        if not svix_id:
            raise PayloadError("a Resend webhook needs its svix-id header (the event's id)")
        return _resend(svix_id, _json(body, "Resend"))
    raise PayloadError(f"unknown provider {provider!r}")


# SendGrid Event Webhook Reference (twilio.com/docs/sendgrid/for-developers/tracking-events/event).
_SENDGRID_KINDS: dict[str, Kind] = {
    "delivered": "delivered",
    "deferred": "deferred",
    "dropped": "dropped",
    "bounce": "bounced",
    "open": "opened",
    "click": "clicked",
    "spamreport": "complained",
}


def _sendgrid(document: Any) -> list[TrackingEvent]:
    if not isinstance(document, list):
        raise PayloadError("the SendGrid body must be a JSON array of events")
    out = []
    for index, item in enumerate(document):
        if not isinstance(item, dict):
            raise PayloadError(f"SendGrid event [{index}] is not a JSON object")
        kind = _SENDGRID_KINDS.get(str(item.get("event")))
        if kind is None:
            continue
        bounce: Literal["hard", "soft"] | None = None
        if kind == "bounced":
            # `type` tells a bounce (permanent) from a block (temporary); older events had no type.
            bounce = "soft" if item.get("type") == "blocked" else "hard"
        event_id = _text(item.get("sg_event_id")) or "sha256:" + _digest(json.dumps(item, sort_keys=True))
        out.append(
            TrackingEvent(
                provider="sendgrid",
                event_id=_bounded(event_id),
                kind=kind,
                recipient=_required(item, "email", f"SendGrid event [{index}]"),
                provider_message_id=_text(item.get("sg_message_id")),
                delivery_ref=_delivery_ref(item),
                occurred_at=_time(item.get("timestamp")),
                bounce=bounce,
                detail=_text(item.get("reason")) or _text(item.get("response")),
                url=_text(item.get("url")) if kind == "clicked" else None,
                suppression=_suppression(kind, bounce),
            )
        )
    return out


# Postmark bounce types (postmarkapp.com/developer/api/bounce-api#bounce-types).
_POSTMARK_HARD = {"HardBounce", "BadEmailAddress"}
_POSTMARK_NOT_BOUNCES = {
    "AutoResponder",
    "AddressChange",
    "ChallengeVerification",
    "OpenRelayTest",
    "Subscribe",
    "Unsubscribe",
    "VirusNotification",
}


def _postmark(record: Any) -> list[TrackingEvent]:
    if not isinstance(record, dict) or not isinstance(record.get("RecordType"), str):
        raise PayloadError("the Postmark body must be a JSON object with a RecordType")
    record_type = record["RecordType"]
    kind: Kind
    bounce: Literal["hard", "soft"] | None = None
    url = None
    if record_type == "Delivery":
        kind, at = "delivered", record.get("DeliveredAt")
    elif record_type in ("Bounce", "SpamComplaint"):
        at = record.get("BouncedAt")
        bounce_type = record.get("Type")
        if record_type == "SpamComplaint" or bounce_type == "SpamComplaint":
            kind = "complained"
        elif bounce_type in _POSTMARK_NOT_BOUNCES:
            return []
        elif bounce_type == "Transient":
            kind = "deferred"  # "the server could not temporarily deliver your message"
        else:
            kind, bounce = "bounced", "hard" if bounce_type in _POSTMARK_HARD else "soft"
    elif record_type == "Open":
        kind, at = "opened", record.get("ReceivedAt")
    elif record_type == "Click":
        kind, at, url = "clicked", record.get("ReceivedAt"), _text(record.get("OriginalLink"))
    else:
        return []  # SubscriptionChange, inbound
    what = f"Postmark {record_type}"
    recipient = _text(record.get("Recipient")) or _required(record, "Email", what)
    message_id = _required(record, "MessageID", what)
    metadata = record.get("Metadata")
    key = f"{record_type}:{message_id}:{at}:{recipient.lower()}"
    return [
        TrackingEvent(
            provider="postmark",
            event_id=_bounded(key),
            kind=kind,
            recipient=recipient,
            provider_message_id=message_id,
            delivery_ref=_delivery_ref(metadata) if isinstance(metadata, dict) else None,
            occurred_at=_time(at),
            bounce=bounce,
            detail=_text(record.get("Details")) or _text(record.get("Description")),
            url=url,
            suppression=_suppression(kind, bounce),
        )
    ]


# Resend webhook event types (resend.com/docs/webhooks/event-types).
_RESEND_KINDS: dict[str, Kind] = {
    "email.delivered": "delivered",
    "email.delivery_delayed": "deferred",
    "email.bounced": "bounced",
    "email.complained": "complained",
    "email.opened": "opened",
    "email.clicked": "clicked",
    "email.failed": "dropped",
    "email.suppressed": "dropped",
}


def _resend(svix_id: str, document: Any) -> list[TrackingEvent]:
    if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
        raise PayloadError('the Resend body must be a JSON object {"type", "created_at", "data"}')
    kind = _RESEND_KINDS.get(str(document.get("type")))
    if kind is None:
        return []
    data = document["data"]
    to = data.get("to")
    recipients = [to] if isinstance(to, str) else to
    if not isinstance(recipients, list) or not recipients or not all(isinstance(r, str) for r in recipients):
        raise PayloadError("Resend data.to: missing, or not a list of addresses")
    bounce: Literal["hard", "soft"] | None = None
    detail = None
    at = document.get("created_at")
    url = None
    if kind == "bounced":
        info = data.get("bounce") if isinstance(data.get("bounce"), dict) else {}
        bounce = "hard" if info.get("type") == "Permanent" else "soft"
        detail = _text(info.get("message"))
    elif kind == "clicked" and isinstance(data.get("click"), dict):
        url, at = _text(data["click"].get("link")), data["click"].get("timestamp") or at
    for name in ("failed", "suppressed"):
        if isinstance(data.get(name), dict):
            detail = _text(data[name].get("reason")) or _text(data[name].get("message"))
    # Resend's events name the email, not which of its recipients bounced or complained: with
    # several, suppressing all of them would punish the innocent, so none is suppressed.
    suppression = _suppression(kind, bounce) if len(recipients) == 1 else None
    return [
        TrackingEvent(
            provider="resend",
            event_id=_bounded(svix_id),
            kind=kind,
            recipient=recipient,
            provider_message_id=_text(data.get("email_id")),
            delivery_ref=_resend_tag(data.get("tags")),
            occurred_at=_time(at),
            bounce=bounce,
            detail=detail,
            url=url,
            suppression=suppression,
        )
        for recipient in recipients
    ]


def _resend_tag(tags: Any) -> str | None:
    """Tags arrive as an object of name to value, or as the send call's list of {name, value}."""
    if isinstance(tags, list):
        tags = {tag.get("name"): tag.get("value") for tag in tags if isinstance(tag, dict)}
    return _delivery_ref(tags) if isinstance(tags, dict) else None


def _delivery_ref(fields: Mapping[str, Any]) -> str | None:
    for key in DELIVERY_REF_KEYS:
        value = _text(fields.get(key))
        if value is not None:
            return value
    return None


def _suppression(kind: Kind, bounce: str | None) -> Suppression | None:
    if kind == "complained":
        return "complaint"
    if kind == "bounced" and bounce == "hard":
        return "bounce"
    return None


def _json(body: str, provider: str) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            f"the {provider} body is not valid JSON: {exc.msg} at column {exc.colno}"
        ) from None


def _required(item: Mapping[str, Any], field: str, what: str) -> str:
    value = _text(item.get(field))
    if value is None:
        raise PayloadError(f"{what}: field {field!r} is missing")
    return value


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _time(value: Any) -> datetime | None:
    """Unix seconds (SendGrid) or ISO 8601 (Postmark, Resend), in UTC; None when unreadable."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.strip())
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _bounded(key: str) -> str:
    return key if len(key) <= MAX_EVENT_ID_CHARS else "sha256:" + _digest(key)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
