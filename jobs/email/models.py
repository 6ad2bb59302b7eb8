"""The `email.send` job's data, as the host sends it."""

from __future__ import annotations

from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator


def _address(value: str) -> str:
    """Syntax only: the daemon never asks DNS (check_deliverability=False)."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid email address: {exc}") from None


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _single_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must be a single line: CR and LF are not allowed")
    return value


Address = Annotated[str, AfterValidator(_address)]
Addresses = Annotated[list[Address], BeforeValidator(_one_or_many)]
Line = Annotated[str, AfterValidator(_single_line)]


class EmailSend(BaseModel):
    """An email: recipients, and a subject with a text and/or an HTML body."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: Addresses = Field(min_length=1, max_length=1000)
    cc: Addresses = Field(default_factory=list, max_length=1000)
    bcc: Addresses = Field(default_factory=list, max_length=1000)
    from_: Address | None = Field(default=None, alias="from")
    reply_to: Address | None = None
    subject: Line = Field(max_length=998)
    text: str | None = None
    html: str | None = None
    headers: dict[Line, Line] = Field(default_factory=dict)
    tags: list[Line] = Field(default_factory=list, max_length=20)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_a_body(self) -> EmailSend:
        if self.text is None and self.html is None:
            raise ValueError("give text, html or both")
        return self
