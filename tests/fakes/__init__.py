"""Local stand-ins for outside services, each speaking its documented protocol on loopback."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.email.providers.base import BatchItem

# What the providers' validators accept, near enough: one @, a dotted domain, no spaces.
_ADDRESS = re.compile(r"^[^@\s<>,]+@[^@\s<>,]+\.[^@\s<>,]+$")


def valid_address(address: str) -> bool:
    return bool(_ADDRESS.match(address))


def addresses_in(value: str) -> list[str]:
    """The addresses of a header-style list: ``a@x.org, "B" <b@y.org>``."""
    return [address or display for display, address in getaddresses([value])]


def unused_port() -> int:
    """A loopback port nobody listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def sample(
    key: str = "id:welcome-1",
    *,
    to: list[str] | None = None,
    cc: list[str] | None = None,
    bcc: list[str] | None = None,
    subject: str = "Welcome",
    text: str | None = "Hello there",
    html: str | None = "<p>Hello there</p>",
    headers: dict[str, str] | None = None,
) -> BatchItem:
    """An email as the email.send job builds it; addresses are not checked, so fakes can refuse them."""
    # Imported here: every fake imports this package, and only the email tests need these.
    from jobs.email.message import build_message, stable_message_id
    from jobs.email.models import EmailSend
    from jobs.email.providers.base import BatchItem

    email = EmailSend.model_construct(
        to=to or ["ada@example.com"],
        cc=cc or [],
        bcc=bcc or [],
        from_=None,
        reply_to=None,
        subject=subject,
        text=text,
        html=html,
        headers=headers or {},
    )
    message = build_message(
        email,
        sender="Taskmaster <sender@example.com>",
        message_id=stable_message_id(key),
        date=datetime(2026, 11, 26, 9, 0, tzinfo=UTC),
    )
    return BatchItem(message, key, [*email.to, *email.cc, *email.bcc])
