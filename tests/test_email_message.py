"""Outgoing.as_bytes (the outbox's fast RFC 5322 writer) reads back as Outgoing.mime does."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from jobs.email.message import Outgoing


def outgoing(**fields: object) -> Outgoing:
    base: dict[str, object] = {
        "sender": "TaskMaster Pro <noreply@example.com>",
        "to": ("Jörg Müller <joerg@example.com>", "ada@example.com"),
        "cc": ("Zoë <zoe@example.com>",),
        "reply_to": "Support <help@example.com>",
        "subject": "Fällig: the Q3 report, due tomorrow at 09:00 — and a long subject " * 2,
        "text": "Hallo Jörg,\nthe report is due.\n" + "x" * 1200,
        "html": "<p>Hallo Jörg</p>",
        "message_id": "<abc@taskmaster-worker>",
        "date": datetime(2026, 7, 14, 10, 0, tzinfo=UTC),
        "extra_headers": {"X-Campaign": "spring — launch", "List-Unsubscribe": "<https://example.com/u>"},
    }
    return Outgoing(**{**base, **fields})  # type: ignore[arg-type]


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def summary(message: EmailMessage) -> dict[str, object]:
    parts = {}
    for kind in ("plain", "html"):
        part = message.get_body((kind,))
        parts[kind] = part.get_content() if isinstance(part, EmailMessage) else None
    names = (
        "From",
        "To",
        "Cc",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "X-Campaign",
        "List-Unsubscribe",
    )
    return {**{name: str(message[name]) for name in names}, **parts}


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"html": None},
        {"text": None},
        {"cc": (), "reply_to": None, "extra_headers": {}, "subject": "plain ascii", "text": "short\n"},
        {"subject": "an ASCII subject too long for one line " * 4, "extra_headers": {"X-Long": "y " * 60}},
    ],
    ids=["both-bodies", "text-only", "html-only", "ascii", "ascii-folded"],
)
def test_as_bytes_reads_back_like_the_mime_message(fields: dict[str, object]) -> None:
    message = outgoing(**fields)
    raw = message.as_bytes()
    assert summary(parsed(raw)) == summary(parsed(message.mime.as_bytes()))
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # SMTP's line ends only
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998  # RFC 5322 2.1.1
    assert raw.isascii()  # names, subject and bodies encoded (RFC 2047, quoted-printable)


def test_an_internationalised_address_is_written_as_it_is() -> None:
    """SMTPUTF8 (RFC 6531): the address itself cannot be encoded; the modern policy writes it."""
    message = outgoing(to=("jörg@exämple.com",))
    assert summary(parsed(message.as_bytes()))["To"] == "jörg@exämple.com"


def test_a_body_holding_the_boundary_makes_the_generator_pick_another() -> None:
    """The boundary comes from the Message-ID; a 7bit body that happens to hold it must not cut
    the message into parts the sender never wrote."""
    boundary = outgoing(text="x\n")._boundary()
    assert boundary is not None
    forged = f"x\n--{boundary}\nContent-Type: text/html\n\nnot a part\n"
    message = outgoing(cc=(), extra_headers={}, subject="s", text=forged, html="<p>real</p>")
    assert summary(parsed(message.as_bytes())) == summary(parsed(message.mime.as_bytes()))
    assert str(summary(parsed(message.as_bytes()))["plain"]).replace("\r\n", "\n") == forged
