"""The `email.send` job's data, as the host sends it."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError


def _address(value: str) -> str:
    """Syntax only: the daemon never asks DNS (check_deliverability=False)."""
    normalized = _normalized(value)
    if normalized is None:
        try:
            validate_email(value, check_deliverability=False)
        except EmailNotValidError as exc:
            raise ValueError(f"{value!r} is not a valid email address: {exc}") from None
        raise AssertionError("validate_email accepted an address it refused")  # pragma: no cover
    return normalized


@functools.lru_cache(maxsize=65536)
def _normalized(value: str) -> str | None:
    """The normalized address, or None when invalid; cached, since each email is validated at
    intake and again in the worker, and the same users' addresses come back all day."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _single_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must be a single line: CR and LF are not allowed")
    return value


Address = Annotated[str, AfterValidator(_address)]
Addresses = Annotated[list[Address], BeforeValidator(_one_or_many)]
Line = Annotated[str, AfterValidator(_single_line)]
Subject = Annotated[str, Field(max_length=998), AfterValidator(_single_line)]
# A template's name: letters, digits, dot, dash and underscore (the column is 128 wide).
TemplateName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)]


# The rule of the validators below, in the JSON Schema too, for hosts that validate before sending.
_BODY = {"anyOf": [{"required": ["text"]}, {"required": ["html"]}]}
_TEMPLATE_OR_CONTENT: dict[str, Any] = {
    "oneOf": [
        {"required": ["template"], "not": _BODY},
        {"required": ["subject"], **_BODY, "not": {"required": ["template"]}},
    ]
}


class EmailSend(BaseModel):
    """An email: recipients, and either a template with its variables or a subject with a text
    and/or an HTML body. A subject given with a template replaces the template's subject."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra=_TEMPLATE_OR_CONTENT)

    to: Addresses = Field(min_length=1, max_length=1000)
    cc: Addresses = Field(default_factory=list, max_length=1000)
    bcc: Addresses = Field(default_factory=list, max_length=1000)
    from_: Address | None = Field(default=None, alias="from")
    reply_to: Address | None = None
    # Before subject: whether a subject is required depends on it.
    template: TemplateName | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    subject: Subject | None = Field(default=None, validate_default=True)
    text: str | None = None
    html: str | None = None
    headers: dict[Line, Line] = Field(default_factory=dict)
    tags: list[Line] = Field(default_factory=list, max_length=20)
    metadata: dict[str, Any] = Field(default_factory=dict)
    # When to send (ISO 8601 with an offset); held in Redis until then, not in a worker.
    send_at: AwareDatetime | None = None

    @field_validator("subject")
    @classmethod
    def _subject_unless_template(cls, value: str | None, info: ValidationInfo) -> str | None:
        # "template" absent from info.data: it failed its own validation, which says so.
        if value is None and "template" in info.data and info.data["template"] is None:
            raise PydanticCustomError("missing", "Field required (or give a template)")
        return value

    @model_validator(mode="after")
    def _template_or_content(self) -> EmailSend:
        # Whether the template exists is not checked here: it may be upserted concurrently,
        # so the job waits for it (NotReady) instead of being rejected at intake.
        if self.template is not None:
            if self.text is not None or self.html is not None:
                raise ValueError("give a template or text/html bodies, not both")
            return self
        if self.variables:
            raise ValueError("variables are for a template: give template too")
        if self.text is None and self.html is None:
            raise ValueError("give text, html or both (or a template)")
        return self
