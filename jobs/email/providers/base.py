"""The contract every email provider keeps, and what the providers share to keep it.

A provider hands an ``Outgoing`` email over, once per idempotency key where the provider
accepts one, and answers with a ``SendResult`` or raises a ``ProviderError`` (errors.py says which
kind). ``send_batch`` hands several over, through the provider's batch endpoint where it has one,
and answers with one result or error per item, in order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any, Protocol, TypeVar

import requests
from requests.adapters import HTTPAdapter

from jobs.email.message import Outgoing
from jobs.email.providers.errors import ProviderError, from_transport, log_failure
from worker import __version__

USER_AGENT = f"taskmaster-worker/{__version__}"


@dataclass(frozen=True)
class SendResult:
    provider: str
    provider_message_id: str
    # False when this exact message had already been handed over (a retry after a crash).
    fresh: bool = True
    # Recipients the provider refused while accepting the others (SMTP), address -> its reply.
    refused: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class BatchItem:
    message: Outgoing
    idempotency_key: str
    envelope_to: list[str]


class Provider(Protocol):
    name: str
    # The most emails one request to the provider carries (1 without a batch endpoint);
    # send_batch takes any number and splits them itself.
    max_batch: int

    def send(self, message: Outgoing, *, idempotency_key: str, envelope_to: list[str]) -> SendResult:
        """Hand one message over, once per idempotency key, or raise ProviderError."""
        ...

    def send_batch(self, items: Sequence[BatchItem]) -> list[SendResult | ProviderError]:
        """Hand several over; one SendResult or ProviderError per item, in order."""
        ...

    def close(self) -> None:
        """Let go of connections; the provider opens new ones if used again."""
        ...


Send = Callable[..., SendResult]


def send_each(send: Send, items: Sequence[BatchItem]) -> list[SendResult | ProviderError]:
    """The batch form for a provider without a batch endpoint: one send per item."""
    results: list[SendResult | ProviderError] = []
    for item in items:
        try:
            results.append(
                send(item.message, idempotency_key=item.idempotency_key, envelope_to=item.envelope_to)
            )
        except ProviderError as exc:
            results.append(exc)
    return results


T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class Address:
    email: str
    name: str = ""

    def formatted(self) -> str:
        if not self.name:
            return self.email
        quoted = self.name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{self.email}>'


@dataclass(frozen=True)
class MessageParts:
    """What an HTTP API needs from a built message: addresses, subject, bodies, other headers."""

    sender: Address
    to: list[Address]
    cc: list[Address]
    bcc: list[Address]
    reply_to: list[Address]
    subject: str
    text: str | None
    html: str | None
    # Message-ID and the host's own headers, in order; the same on every attempt.
    headers: dict[str, str]

    @property
    def message_id(self) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == "message-id"), "")


def parts_of(message: Outgoing, envelope_to: Sequence[str]) -> MessageParts:
    """Split a message for an HTTP API; Bcc is whoever is in the envelope but not in To or Cc."""
    display, sender = parseaddr(message.sender)
    to = [Address(email) for email in message.to]
    cc = [Address(email) for email in message.cc]
    shown = {a.email.lower() for a in (*to, *cc)}
    bcc = [Address(email) for email in dict.fromkeys(envelope_to) if email.lower() not in shown]
    return MessageParts(
        sender=Address(sender, display),
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=[Address(message.reply_to)] if message.reply_to else [],
        subject=message.subject,
        text=message.text,
        html=message.html,
        headers=message.headers,
    )


class SessionPerThread:
    """One ``requests.Session`` per thread, for the JSON APIs (Postmark, Resend).

    A session keeps its connection alive between sends. Sessions are not documented as safe to
    share between threads (psf/requests#2766: the maintainers recommend one per thread), and a
    worker thread sends one email at a time, so each thread gets its own session and connection.
    """

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = dict(headers)
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(self._headers)
            # Sends are retried by the job and fail over between providers, never inside requests.
            session.mount("http://", HTTPAdapter(max_retries=0))
            session.mount("https://", HTTPAdapter(max_retries=0))
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._all = self._all, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def post_json(
        self,
        provider: str,
        url: str,
        payload: object,
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """POST a JSON body on this thread's session; a failure without an answer raises ProviderError."""
        try:
            return self.get().post(url, data=json.dumps(payload), headers=headers, timeout=timeout_s)
        except requests.RequestException as exc:
            error = from_transport(provider, exc)
            log_failure(error)
            raise error from exc


def json_body(response: requests.Response) -> Any:
    """The decoded JSON answer, or None when the body is not JSON (a proxy's error page)."""
    try:
        return response.json()
    except ValueError:
        return None
