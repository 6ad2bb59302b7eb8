"""The `email.send` job."""

from __future__ import annotations

from datetime import UTC, datetime

import dramatiq

from jobs.email.delivery import ChainExhausted, EmailRejected
from jobs.email.message import build_message, stable_message_id
from jobs.email.models import EmailSend
from jobs.email.providers.factory import check_provider_settings
from jobs.email.sender import Sender, sender_for
from jobs.email.template_store import latest_templates
from jobs.email.templating import RenderError, TemplateSource, render
from worker.context import JobContext
from worker.errors import NotReady, PermanentError
from worker.logging import get_logger
from worker.registry import job, settings_check
from worker.runtime import Runtime
from worker.settings import Settings

log = get_logger(__name__)


@settings_check
def check_email_settings(settings: Settings) -> None:
    check_provider_settings(settings)


def _with_template(ctx: JobContext, email: EmailSend, name: str) -> tuple[EmailSend, TemplateSource]:
    """The email with the latest version of its template rendered into subject and bodies."""
    source = load_template(ctx.runtime, name)
    return rendered(email, source), source


def load_template(runtime: Runtime, name: str) -> TemplateSource:
    """The latest version of template ``name``; NotReady while it does not exist."""
    # Through the reader: no write lock for a read.
    source = latest_templates(runtime).get(runtime.reader, name)
    if source is None:
        # Not refused at intake: its `template.upsert` may still be on its way.
        raise NotReady(f"email template {name!r} does not exist (yet); add it with template.upsert")
    return source


def rendered(email: EmailSend, source: TemplateSource) -> EmailSend:
    """The email with ``source`` rendered into its subject and bodies."""
    try:
        result = render(source, email.variables, subject=email.subject)
    except RenderError as exc:
        # The same template and variables fail the same way on every attempt.
        raise PermanentError(str(exc)) from exc
    update = {"subject": result.subject, "text": result.text, "html": result.html}
    return email.model_copy(update=update)


def recipients_of(email: EmailSend) -> list[str]:
    """To, Cc and Bcc, each address once, in that order."""
    return list(dict.fromkeys([*email.to, *email.cc, *email.bcc]))


def identity(message_id: str, template: TemplateSource | None) -> dict[str, object]:
    """What every event of one email carries: its Message-ID, and its template if it has one."""
    return {
        "message_id": message_id,
        **({"template": template.name, "template_version": template.version} if template else {}),
    }


# Also on the urgent and bulk queues: an urgent notification's email must not wait behind
# ordinary mail, and bulk mail must not delay either.
@job("email.send", EmailSend, queue="default", queues=("urgent", "bulk"))
def send_email(ctx: JobContext, email: EmailSend) -> None:
    """Render its template if it has one, build the message once and hand it to the first
    provider of the chain that takes it; record each recipient and report the outcome."""
    if email.send_at is not None and email.send_at > datetime.now(UTC):
        _hold_until_send_at(ctx, email)
        return
    template: TemplateSource | None = None
    if email.template is not None:
        email, template = _with_template(ctx, email, email.template)
    service = sender_for(ctx.runtime)
    key = ctx.idempotency_key
    message_id = stable_message_id(key)
    recipients = recipients_of(email)
    pending, blocked = service.records.begin(key, message_id, recipients)
    if not pending:
        return  # a retry of an email already handed over
    about = identity(message_id, template)
    if blocked:
        for recipient, reason in blocked.items():
            service.records.finish(key, [recipient], status="failed", error=f"suppressed ({reason})")
            ctx.emit("email.suppressed", {**about, "to": [recipient], "reason": reason})
        pending = [r for r in pending if r not in blocked]
        if not pending:
            return
    later: dict[str, str] = {}
    for copy, send_key, to in copies_for(email, key, pending):
        later |= _send(
            ctx, service, copy, key=key, send_key=send_key, message_id=message_id, to=to, about=about
        )
    if later:
        delay_s = ctx.backoff_s()
        log.info("email.recipients_deferred", recipients=len(later), retry_in_s=round(delay_s, 1))
        raise dramatiq.Retry(f"{len(later)} recipient(s) deferred by the server", delay=int(delay_s * 1000))


def _send(
    ctx: JobContext,
    service: Sender,
    email: EmailSend,
    *,
    key: str,
    send_key: str,
    message_id: str,
    to: list[str],
    about: dict[str, object],
) -> dict[str, str]:
    """Hand one message to the chain and record the outcome; return recipients to try later."""
    date = datetime.fromtimestamp(ctx.submitted_ms / 1000, UTC)
    message = build_message(email, sender=ctx.runtime.settings.email_from, message_id=message_id, date=date)
    try:
        result = service.chain.send(message, idempotency_key=send_key, envelope_to=to)
    except EmailRejected as exc:
        service.records.finish(key, to, status="failed", provider=exc.error.provider, error=exc.error.message)
        ctx.emit(
            "email.failed", {**about, "provider": exc.error.provider, "to": to, "error": exc.error.message}
        )
        return {}
    except ChainExhausted as exc:
        delay_s = max(exc.retry_after_s or 0.0, ctx.backoff_s())
        log.warning("email.waiting_for_providers", retry_in_s=round(delay_s, 1), reasons=exc.reasons)
        raise dramatiq.Retry(str(exc), delay=int(delay_s * 1000)) from None
    sent = [r for r in to if r not in result.refused]
    service.records.finish(
        key, sent, status="sent", provider=result.provider, provider_message_id=result.provider_message_id
    )
    # A 4xx refusal of one recipient is transient (RFC 5321): it stays queued and is tried again.
    later = {r: reason for r, reason in result.refused.items() if reason.lstrip().startswith("4")}
    for recipient, reason in result.refused.items():
        if recipient in later:
            continue
        service.records.finish(key, [recipient], status="failed", provider=result.provider, error=reason)
        ctx.emit("email.failed", {**about, "provider": result.provider, "to": [recipient], "error": reason})
    if result.fresh and sent:
        ctx.emit(
            "email.sent",
            {
                **about,
                "provider": result.provider,
                "provider_message_id": result.provider_message_id,
                "to": sent,
            },
        )
    return later


def _hold_until_send_at(ctx: JobContext, email: EmailSend) -> None:
    """Keep the email in the due-time store until its send_at; the same job runs then.

    The key is the job's idempotency key, so a retried job holds it once, and the released job
    keeps the host's id and entry, so its events still match what the host submitted.
    """
    from worker.due import DueStore

    assert email.send_at is not None
    job_type = ctx.runtime.registry.get("email.send")
    assert job_type is not None
    data = email.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"send_at"})
    DueStore(ctx.runtime.redis, ctx.runtime.keys).put(
        f"email.send_at:{ctx.idempotency_key}",
        job_type,
        data,
        email.send_at,
        job_id=ctx.job.id,
        entry=ctx.job.entry,
        submitted_ms=ctx.submitted_ms,
    )
    ctx.emit("email.scheduled", {"send_at": email.send_at.isoformat(), "to": email.to})


def copies_for(email: EmailSend, key: str, pending: list[str]) -> list[tuple[EmailSend, str, list[str]]]:
    """The messages that send ``email`` to its ``pending`` recipients: (email, provider
    idempotency key, envelope recipients) each. The email itself when everyone is pending; else
    one addressed to those alone; one copy each when only Bcc recipients are left."""
    if len(pending) == len(recipients_of(email)):
        return [(email, key, pending)]
    # Some recipients are done or suppressed: HTTP providers take recipients from the message's
    # own To and Cc, so those must list only who is still to be sent to.
    left = only(email, pending)
    if not left.to:
        # Only Bcc recipients are left: one copy each, so none sees the others.
        return [(only_to(left, r), f"{key}:{r}", [r]) for r in pending]
    return [(left, key, pending)]


def only(email: EmailSend, recipients: list[str]) -> EmailSend:
    """The email addressed to ``recipients`` alone.

    When none of its To recipients is left, the Cc recipients move up to To: the HTTP APIs refuse
    a message without one. Bcc recipients never do (they would see each other): a caller left
    with Bcc alone sends each one a copy of its own (`only_to`).
    """
    keep = set(recipients)
    to = [r for r in email.to if r in keep]
    cc = [r for r in email.cc if r in keep]
    bcc = [r for r in email.bcc if r in keep]
    if not to and cc:
        to, cc = cc, []
    return email.model_copy(update={"to": to, "cc": cc, "bcc": bcc})


def only_to(email: EmailSend, recipient: str) -> EmailSend:
    """A copy of the email addressed to ``recipient`` alone."""
    return email.model_copy(update={"to": [recipient], "cc": [], "bcc": []})
