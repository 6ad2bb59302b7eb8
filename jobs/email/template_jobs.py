"""The `template.upsert` job: a new version of a named email template, used from then on."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from jobs.email.models import Subject, TemplateName
from jobs.email.template_store import TemplateStore, latest_templates
from jobs.email.templating import TemplateInvalid, check_syntax
from worker.context import JobContext
from worker.logging import get_logger
from worker.registry import job

log = get_logger(__name__)


def _compiles_as(part: str) -> AfterValidator:
    def check(source: str) -> str:
        try:
            check_syntax(source, part)
        except TemplateInvalid as exc:
            # pydantic reports it under the field: "data.html: template syntax error at line 3: ..."
            raise ValueError(str(exc)) from None
        return source

    return AfterValidator(check)


class TemplateUpsert(BaseModel):
    """A named template: a one-line subject and an HTML and/or a text body, all Jinja2.

    Without a text body, the text part of each email is derived from the HTML.
    """

    model_config = ConfigDict(extra="forbid")

    name: TemplateName
    subject: Annotated[Subject, _compiles_as("subject")]
    html: Annotated[str, Field(min_length=1), _compiles_as("html")] | None = None
    text: Annotated[str, Field(min_length=1), _compiles_as("text")] | None = None

    @model_validator(mode="after")
    def _needs_a_body(self) -> TemplateUpsert:
        if self.html is None and self.text is None:
            raise ValueError("give html, text or both")
        return self


@job("template.upsert", TemplateUpsert, queue="default")
def upsert_template(ctx: JobContext, template: TemplateUpsert) -> None:
    """Store a new version; report `template.upserted` with the version emails will use."""
    store = TemplateStore(ctx.runtime.db)
    version, created = store.add_version(template.name, template.subject, template.html, template.text)
    # Even when not created: an earlier attempt may have stored it and died before this.
    latest_templates(ctx.runtime).changed()
    log.info("template.stored", template=template.name, version=version, created=created)
    ctx.emit("template.upserted", {"name": template.name, "version": version, "created": created})
