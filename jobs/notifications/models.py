"""The data of the notification job types, as the host sends it.

`user.upsert`, `user.delete`, `preferences.update` (partial), `notification.send` and
`notification.cancel`. Validation happens at intake, so every message here names the field and
says what is accepted.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from functools import lru_cache
from typing import Annotated, Any, Literal, get_args
from zoneinfo import available_timezones

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PositiveInt,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

Channel = Literal["email", "push", "webhook"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)
Priority = Literal["low", "normal", "high", "urgent"]
DigestMode = Literal["off", "window", "hourly", "daily"]
CapName = Literal["per_hour", "per_day"]

HostId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Category = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"),
    Field(description="letters, digits, '_', '.', ':' and '-', at most 64, such as 'task.reminder'"),
]

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


def _hhmm(value: object) -> object:
    if isinstance(value, time) and value.second == 0 and value.microsecond == 0 and value.tzinfo is None:
        return value
    if isinstance(value, str):
        match = _HHMM.match(value)
        if match:
            return time(int(match.group(1)), int(match.group(2)))
    raise ValueError(f"expected a time of day as HH:MM (00:00 to 23:59), got {value!r}")


LocalTime = Annotated[
    time,
    BeforeValidator(_hhmm),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str),
    WithJsonSchema({"type": "string", "pattern": _HHMM.pattern, "examples": ["22:00"]}),
]


# Files of a system's zone directory that are not zone names: "localtime" is this machine's zone
# (whatever it is), "posixrules" a template. available_timezones() lists them on some systems.
_NOT_ZONES = frozenset({"localtime", "posixrules"})


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_ZONES


def _zone_name(value: str) -> str:
    # Membership rather than ZoneInfo(value), which opens any file under the zone path.
    if value not in _zone_names():
        raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Europe/Berlin or UTC")
    return value


TimeZoneName = Annotated[
    str, AfterValidator(_zone_name), WithJsonSchema({"type": "string", "examples": ["Europe/Berlin"]})
]


def _address(value: str) -> str:
    # Not jobs.email's type: importing that package registers its actors as a side effect.
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid email address: {exc}") from None


def _single_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must be a single line: CR and LF are not allowed")
    return value


Address = Annotated[str, StringConstraints(max_length=320), AfterValidator(_address)]
Line = Annotated[str, AfterValidator(_single_line)]


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


def _locale(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*", value):
        raise ValueError(f"expected a BCP 47 language tag such as 'en' or 'de-AT', got {value!r}")
    return value


Locale = Annotated[str, StringConstraints(max_length=35), AfterValidator(_locale)]


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+", value, re.IGNORECASE):
        raise ValueError(f"expected an http or https URL, got {value!r}")
    return value


HttpUrl = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_http_url)]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuietHours(_Data):
    """Local times in the user's zone; an end before the start spans midnight."""

    start: LocalTime
    end: LocalTime

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet_hours: start and end are equal; give null to turn quiet hours off")
        return self


class PushTokenData(_Data):
    token: str = Field(min_length=1, max_length=512)
    platform: Literal["android", "ios", "web"] | None = None


def _token_or_object(value: object) -> object:
    return {"token": value} if isinstance(value, str) else value


class UserUpsert(_Data):
    """A user as the host describes them. ``push_tokens`` omitted keeps the stored ones; a list
    replaces them (an empty list removes them all)."""

    user_id: HostId
    email: Address | None = None
    name: Line | None = Field(default=None, max_length=256)
    timezone: TimeZoneName = "UTC"
    locale: Locale = "en"
    push_tokens: list[Annotated[PushTokenData, BeforeValidator(_token_or_object)]] | None = Field(
        default=None, max_length=50
    )


class UserDelete(_Data):
    """Erase the user's personal data."""

    user_id: HostId


class PreferencesUpdate(_Data):
    """A partial update: only the fields given change, and within ``channels``, ``categories``
    and ``caps`` only the keys given. In ``categories`` a null channel goes back to the user's
    channel setting and a null category drops every choice for it; a null cap removes that cap;
    null ``quiet_hours`` or ``dnd_until`` turns them off."""

    user_id: HostId
    channels: dict[Channel, bool] | None = None
    categories: dict[Category, dict[Channel, bool | None] | None] | None = None
    quiet_hours: QuietHours | None = None
    dnd_until: UtcDatetime | None = None
    digest: DigestMode | None = None
    digest_at: LocalTime | None = None
    caps: dict[CapName, PositiveInt | None] | None = None

    @model_validator(mode="after")
    def _coherent(self) -> PreferencesUpdate:
        given = self.model_fields_set
        for name in ("channels", "categories", "digest", "digest_at", "caps"):
            if name in given and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null; leave it out to keep the stored value")
        if self.digest == "daily" and self.digest_at is None:
            raise ValueError('digest "daily" needs digest_at, the local time of day as HH:MM')
        return self

    def given(self, name: str) -> bool:
        """Whether the host sent this field (a null counts as sent)."""
        return name in self.model_fields_set


class NotificationSend(_Data):
    """One notification for one user; the envelope ``id`` is its notification id."""

    user_id: HostId
    category: Category
    title: Line = Field(min_length=1, max_length=250)
    body: str = Field(default="", max_length=10_000)
    priority: Priority = "normal"
    channels: list[Channel] | None = Field(default=None, min_length=1)
    url: HttpUrl | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    dedupe_key: str | None = Field(default=None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _distinct_channels(self) -> NotificationSend:
        if self.channels is not None and len(set(self.channels)) != len(self.channels):
            raise ValueError("channels names a channel twice")
        return self

    def wanted_channels(self) -> tuple[Channel, ...]:
        """The channels to decide on, in a fixed order."""
        if self.channels is None:
            return CHANNELS
        return tuple(c for c in CHANNELS if c in self.channels)


class NotificationCancel(_Data):
    """Withdraw a notification still held: by its envelope id, or by user and dedupe key."""

    notification_id: str | None = Field(default=None, min_length=1, max_length=255)
    user_id: HostId | None = None
    dedupe_key: str | None = Field(default=None, min_length=1, max_length=255)

    @model_validator(mode="after")
    def _one_way(self) -> NotificationCancel:
        by_id = self.notification_id is not None
        by_key = self.user_id is not None and self.dedupe_key is not None
        if by_id == by_key or (by_id and self.dedupe_key is not None):
            raise ValueError("give either notification_id, or user_id and dedupe_key")
        return self
