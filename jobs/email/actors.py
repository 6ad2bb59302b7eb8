"""The `email.send` job."""

from __future__ import annotations

from datetime import UTC, datetime

from jobs.email.message import build_message, stable_message_id
from jobs.email.models import EmailSend
from jobs.email.providers.outbox import OutboxProvider
from jobs.email.template_store import TemplateStore, find_template
from jobs.email.templating import RenderError, TemplateSource, render
from worker.context import JobContext
from worker.errors import ConfigError, NotReady, PermanentError
from worker.registry import job, settings_check
from worker.settings import Settings

# Providers with an implementation in this release; the others are named by the settings so
# that configuration can be written ahead, and are refused at start-up until they land.
IMPLEMENTED_PROVIDERS = ("outbox",)


@settings_check
def check_email_settings(settings: Settings) -> None:
    missing = [name for name in settings.email_providers if name not in IMPLEMENTED_PROVIDERS]
    if missing:
        raise ConfigError(
            f"TASKMASTER_EMAIL_PROVIDERS: provider {missing[0]!r} is not available in this release;"
            f" available: {', '.join(IMPLEMENTED_PROVIDERS)}"
        )


_outboxes: dict[str, OutboxProvider] = {}


def _outbox(ctx: JobContext) -> OutboxProvider:
    directory = ctx.runtime.settings.outbox_dir
    provider = _outboxes.get(str(directory))
    if provider is None:
        provider = _outboxes[str(directory)] = OutboxProvider(directory)
    return provider


def _with_template(ctx: JobContext, email: EmailSend, name: str) -> tuple[EmailSend, TemplateSource]:
    """The email with the latest version of its template rendered into subject and bodies."""
    source = find_template(TemplateStore(ctx.runtime.db), name)
    if source is None:
        # Not refused at intake: its `template.upsert` may still be on its way.
        raise NotReady(f"email template {name!r} does not exist (yet); add it with template.upsert")
    try:
        rendered = render(source, email.variables, subject=email.subject)
    except RenderError as exc:
        # The same template and variables fail the same way on every attempt.
        raise PermanentError(str(exc)) from exc
    update = {"subject": rendered.subject, "text": rendered.text, "html": rendered.html}
    return email.model_copy(update=update), source


@job("email.send", EmailSend, queue="default")
def send_email(ctx: JobContext, email: EmailSend) -> None:
    """Render its template if it has one, build the message once and hand it to the provider;
    report `email.sent`."""
    template: TemplateSource | None = None
    if email.template is not None:
        email, template = _with_template(ctx, email, email.template)
    key = ctx.idempotency_key
    message_id = stable_message_id(key)
    date = datetime.fromtimestamp(ctx.submitted_ms / 1000, UTC)
    message = build_message(email, sender=ctx.runtime.settings.email_from, message_id=message_id, date=date)
    result = _outbox(ctx).send(message, idempotency_key=key, envelope_to=[*email.to, *email.cc, *email.bcc])
    if result.fresh:
        ctx.emit(
            "email.sent",
            {
                "message_id": message_id,
                "provider": result.provider,
                "provider_message_id": result.provider_message_id,
                "to": email.to,
                **({"template": template.name, "template_version": template.version} if template else {}),
            },
        )
