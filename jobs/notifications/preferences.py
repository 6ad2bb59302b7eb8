"""A user's notification preferences as one value, and merging a partial update into it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from jobs.notifications.models import (
    CHANNELS,
    Channel,
    DigestMode,
    LocalTime,
    PreferencesUpdate,
    QuietHours,
    UtcDatetime,
)


def _all_on() -> dict[Channel, bool]:
    return dict.fromkeys(CHANNELS, True)


class Caps(BaseModel):
    """Most deliveries per channel in a sliding hour and day; None means no cap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_hour: PositiveInt | None = None
    per_day: PositiveInt | None = None


class Preferences(BaseModel):
    """What a user chose; a user who never chose anything gets these defaults: every channel
    on, no quiet hours, no do-not-disturb, a 5-minute digest window, no caps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: dict[Channel, bool] = Field(default_factory=_all_on)
    # Only explicit choices: a channel missing from a category follows ``channels``.
    categories: dict[str, dict[Channel, bool]] = Field(default_factory=dict)
    quiet_hours: QuietHours | None = None
    dnd_until: UtcDatetime | None = None
    digest: DigestMode = "window"
    digest_at: LocalTime | None = None
    caps: Caps = Field(default_factory=Caps)

    @field_validator("quiet_hours", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # The preferences table stores "no quiet hours" as an empty JSON object.
        return None if value == {} else value

    @model_validator(mode="after")
    def _complete(self) -> Preferences:
        for channel in CHANNELS:
            self.channels.setdefault(channel, True)
        if self.digest == "daily" and self.digest_at is None:
            raise ValueError('digest "daily" needs digest_at')
        return self

    def channel_on(self, channel: Channel) -> bool:
        return self.channels.get(channel, True)

    def category_choice(self, category: str, channel: Channel) -> bool | None:
        """The user's explicit choice for this category on this channel, or None."""
        choices = self.categories.get(category)
        return None if choices is None else choices.get(channel)

    def dnd_active(self, now: datetime) -> bool:
        return self.dnd_until is not None and now < self.dnd_until


def merge(stored: Preferences, update: PreferencesUpdate) -> Preferences:
    """The preferences after ``update``: only what it gives changes (see PreferencesUpdate)."""
    values = stored.model_dump()
    if update.channels is not None:
        values["channels"] = {**stored.channels, **update.channels}
    if update.categories is not None:
        categories = {name: dict(choices) for name, choices in stored.categories.items()}
        for name, choices in update.categories.items():
            merged = {} if choices is None else {**categories.get(name, {}), **choices}
            kept = {channel: on for channel, on in merged.items() if on is not None}
            if kept:
                categories[name] = kept
            else:
                categories.pop(name, None)
        values["categories"] = categories
    for name in ("quiet_hours", "dnd_until", "digest", "digest_at"):
        if update.given(name):
            value = getattr(update, name)
            values[name] = value.model_dump() if isinstance(value, BaseModel) else value
    if update.caps is not None:
        values["caps"] = {**values["caps"], **update.caps}
    return Preferences.model_validate(values)
