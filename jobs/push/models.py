"""The `push.send` job's data."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# FCM refuses data keys it uses itself: "from", "gcm", anything prefixed "google"
# (ErrorCode, INVALID_ARGUMENT: invalid data key), and "notification", "message_type".
_RESERVED_KEYS = frozenset({"from", "notification", "message_type"})
_RESERVED_PREFIXES = ("google", "gcm")
# "4096 bytes for most messages ... This includes both the keys and the values" (ErrorCode).
MAX_PAYLOAD_BYTES = 4096


def _data_key(key: str) -> str:
    lowered = key.lower()
    if lowered in _RESERVED_KEYS or lowered.startswith(_RESERVED_PREFIXES):
        raise ValueError(f"{key!r} is reserved by FCM (from, notification, message_type, google*, gcm*)")
    return key


def _web_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http or https URL")
    return value


DataKey = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_data_key)]
WebUrl = Annotated[str, Field(max_length=2048), AfterValidator(_web_url)]


class PushSend(BaseModel):
    """A push notification to every registered device of one user."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=128)
    title: str = Field(min_length=1, max_length=1024)
    body: str = Field(max_length=4096)
    data: dict[DataKey, str] = Field(default_factory=dict)
    url: WebUrl | None = None
    notification_id: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _fits_fcm(self) -> PushSend:
        for name in ("url", "notification_id"):
            if getattr(self, name) is not None and name in self.data:
                raise ValueError(f"data.{name} and {name} are both given; give one")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in self.message_data().items())
        size += len(self.title.encode()) + len(self.body.encode())
        if size > MAX_PAYLOAD_BYTES:
            raise ValueError(f"title, body and data take {size} bytes; FCM accepts {MAX_PAYLOAD_BYTES}")
        return self

    def message_data(self) -> dict[str, str]:
        """The FCM data payload: the host's data, with url and notification_id for the app."""
        out = dict(self.data)
        if self.url is not None:
            out["url"] = self.url
        if self.notification_id is not None:
            out["notification_id"] = self.notification_id
        return out
