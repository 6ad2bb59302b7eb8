"""The internal `email.send_batch` job: many emails (a digest run, a campaign) through the
providers' batch endpoints, each email recorded and reported on its own.

One attempt renders every email, records all recipients in one transaction, skips those
suppressed or already done, hands the rest to ``Chain.send_batch`` and records the outcomes in
one more transaction. Emails no provider took now stay queued and the job is retried with
backoff; a retry finds the others done and sends only what is still queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import dramatiq
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from jobs.email.actors import copies_for, identity, load_template, recipients_of, rendered
from jobs.email.message import build_message, stable_message_id
from jobs.email.models import EmailSend
from jobs.email.providers.base import BatchItem, SendResult
from jobs.email.records import Attempt, Outcome
from jobs.email.sender import sender_for
from jobs.email.templating import TemplateSource
from worker.context import JobContext
from worker.errors import PermanentError
from worker.logging import get_logger
from worker.registry import job

log = get_logger(__name__)

MAX_EMAILS = 1000
# The records' idempotency_key column is 255 wide.
Key = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class BatchEmail(EmailSend):
    """One email of a batch: the EmailSend fields and the key that makes it happen once."""

    key: Key

    @model_validator(mode="after")
    def _no_send_at(self) -> BatchEmail:
        if self.send_at is not None:
            raise ValueError("send_at is not taken in a batch: schedule the batch job instead")
        return self


class EmailBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    emails: list[BatchEmail] = Field(min_length=1, max_length=MAX_EMAILS)

    @model_validator(mode="after")
    def _distinct_keys(self) -> EmailBatch:
        keys = [e.key for e in self.emails]
        if len(set(keys)) != len(keys):
            raise ValueError("each email of a batch needs its own key")
        return self


@dataclass
class _Email:
    """One email on its way through an attempt."""

    email: BatchEmail
    message_id: str
    template: TemplateSource | None
    render_error: str | None = None
    pending: list[str] = field(default_factory=list)

    @property
    def about(self) -> dict[str, object]:
        return {"key": self.email.key, **identity(self.message_id, self.template)}


@job("email.send_batch", EmailBatch, queue="bulk", public=False)
def send_email_batch(ctx: JobContext, batch: EmailBatch) -> None:
    """Send the emails of the batch still to be sent; retry later those no provider took now."""
    service = sender_for(ctx.runtime)
    emails = _render_all(ctx, batch.emails)
    begun = service.records.begin_many(
        [Attempt(e.email.key, e.message_id, recipients_of(e.email)) for e in emails]
    )
    report = _Report(ctx)
    sending: list[_Email] = []
    for e, (pending, blocked) in zip(emails, begun, strict=True):
        for recipient, reason in blocked.items():
            report.fail(e, [recipient], None, f"suppressed ({reason})", event=None)
            report.event("email.suppressed", {**e.about, "to": [recipient], "reason": reason})
        e.pending = [r for r in pending if r not in blocked]
        if not e.pending:
            continue
        if e.render_error is not None:
            report.fail(e, e.pending, None, e.render_error)
            continue
        sending.append(e)
    date = datetime.fromtimestamp(ctx.submitted_ms / 1000, UTC)
    pieces = [p for e in sending for p in _pieces(e, ctx.runtime.settings.email_from, date)]
    results = service.chain.send_batch([p.item for p in pieces]) if pieces else []
    left = 0
    waits: list[float] = []  # the providers' Retry-After of what is left
    for piece, result in zip(pieces, results, strict=True):
        e = piece.email
        if isinstance(result, SendResult):
            left += bool(report.sent(e, piece.item.envelope_to, result))
        elif result.kind == "rejected":
            report.fail(e, piece.item.envelope_to, result.provider, result.message)
        else:
            left += 1
            if result.retry_after_s is not None:
                waits.append(result.retry_after_s)
    service.records.finish_many(report.outcomes)
    report.publish()
    if left:
        # As for one email: no sooner than the earliest a provider said it could take them.
        delay_s = max(min(waits, default=0.0), ctx.backoff_s())
        log.warning("email.batch_left_for_later", emails=left, retry_in_s=round(delay_s, 1))
        raise dramatiq.Retry(f"{left} email(s) left for later", delay=int(delay_s * 1000))


def _render_all(ctx: JobContext, emails: list[BatchEmail]) -> list[_Email]:
    """Each email with its template rendered; templates looked up once per name.

    A template not there yet holds the whole batch (NotReady), as it would hold one email; a
    template that fails to render fails only the emails using it.
    """
    sources: dict[str, TemplateSource] = {}
    out: list[_Email] = []
    for email in emails:
        message_id = stable_message_id(email.key)
        if email.template is None:
            out.append(_Email(email, message_id, None))
            continue
        source = sources.get(email.template)
        if source is None:
            source = sources[email.template] = load_template(ctx.runtime, email.template)
        try:
            done = rendered(email, source)
        except PermanentError as exc:
            out.append(_Email(email, message_id, source, render_error=str(exc)))
            continue
        assert isinstance(done, BatchEmail)
        out.append(_Email(done, message_id, source))
    return out


@dataclass(frozen=True)
class _Piece:
    """One message of the batch request: an email, or the copy of one of its Bcc recipients."""

    email: _Email
    item: BatchItem


def _pieces(e: _Email, sender: str, date: datetime) -> list[_Piece]:
    """The messages that send ``e`` to its pending recipients, as `email.send` would send them."""
    return [
        _Piece(e, BatchItem(build_message(copy, sender=sender, message_id=e.message_id, date=date), key, to))
        for copy, key, to in copies_for(e.email, e.email.key, list(e.pending))
    ]


class _Report:
    """The outcomes of one attempt: record rows and events, written together at the end."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self.outcomes: list[Outcome] = []
        self._events: list[tuple[str, dict[str, Any]]] = []

    def event(self, kind: str, data: dict[str, Any]) -> None:
        self._events.append((kind, data))

    def fail(
        self,
        e: _Email,
        recipients: list[str],
        provider: str | None,
        error: str,
        event: str | None = "email.failed",
    ) -> None:
        key = e.email.key
        self.outcomes.extend(Outcome(key, r, "failed", provider=provider, error=error) for r in recipients)
        if event is not None:
            self.event(event, {**e.about, "provider": provider, "to": recipients, "error": error})

    def sent(self, e: _Email, recipients: list[str], result: SendResult) -> list[str]:
        """Record a provider's acceptance of ``e`` for ``recipients``; returns the recipients it
        deferred (SMTP 4xx)."""
        sent = [r for r in recipients if r not in result.refused]
        key = e.email.key
        self.outcomes.extend(
            Outcome(key, r, "sent", provider=result.provider, provider_message_id=result.provider_message_id)
            for r in sent
        )
        # A 4xx refusal of one recipient is transient (RFC 5321): it stays queued for the retry.
        later = [r for r, reason in result.refused.items() if reason.lstrip().startswith("4")]
        for recipient, reason in result.refused.items():
            if recipient not in later:
                self.fail(e, [recipient], result.provider, reason)
        if result.fresh and sent:
            self.event(
                "email.sent",
                {
                    **e.about,
                    "provider": result.provider,
                    "provider_message_id": result.provider_message_id,
                    "to": sent,
                },
            )
        return later

    def publish(self) -> None:
        """Every event of the attempt in one round trip, after the records say what happened."""
        if not self._events:
            return
        events = self._ctx.runtime.events
        pipe = self._ctx.runtime.redis.pipeline(transaction=False)
        for kind, data in self._events:
            events.publish_in(pipe, kind, data, job=self._ctx.job)
        pipe.execute()
