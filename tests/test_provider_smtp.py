"""The SMTP provider with smtplib, against aiosmtpd on loopback: plain, STARTTLS and implicit TLS."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from jobs.email.providers.base import SendResult
from jobs.email.providers.errors import ProviderError
from jobs.email.providers.factory import build_providers, check_provider_settings
from jobs.email.providers.smtp import SMTPProvider, Tls
from tests.fakes import sample, unused_port
from tests.fakes.smtp import Certificate, FakeSMTP
from tests.helpers import wait_for
from worker.errors import ConfigError
from worker.settings import load_settings


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return Certificate.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server() -> Iterator[FakeSMTP]:
    with FakeSMTP() as fake:
        yield fake


def provider_for(
    fake: FakeSMTP,
    *,
    tls: Tls = "none",
    certificate: Certificate | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 5.0,
) -> SMTPProvider:
    return SMTPProvider(
        fake.host,
        fake.port,
        tls=tls,
        timeout_s=timeout_s,
        username=username,
        password=password,
        ssl_context=certificate.client_context() if certificate else None,
        local_hostname="client.test",  # no lookup of this machine's name
    )


def send(provider: SMTPProvider, key: str = "id:welcome-1", **fields: object) -> SendResult:
    item = sample(key, **fields)  # type: ignore[arg-type]
    return provider.send(item.message, idempotency_key=item.idempotency_key, envelope_to=item.envelope_to)


def failure(provider: SMTPProvider, **fields: object) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        send(provider, "id:welcome-1", **fields)
    return caught.value


def test_plain_smtp_delivers_the_message_with_its_envelope(server: FakeSMTP) -> None:
    """The envelope holds To, Cc and Bcc; the message keeps its Message-ID and shows no Bcc."""
    provider = provider_for(server)
    result = send(provider, "id:order-7", cc=["bob@example.com"], bcc=["eve@example.com"])
    provider.close()

    (received,) = server.received
    assert received.rcpt_tos == ["ada@example.com", "bob@example.com", "eve@example.com"]
    assert received.mail_from == "sender@example.com"
    message = message_from_bytes(received.content)
    assert message["Message-ID"] == sample("id:order-7").message.message_id
    assert message["Bcc"] is None and "eve@example.com" not in received.content.decode()
    assert result == SendResult("smtp", message["Message-ID"])
    assert not received.tls and received.login is None


def test_auth_over_plain_smtp(certificate: Certificate) -> None:
    """AUTH with the configured user (a relay that allows it without TLS)."""
    with FakeSMTP(users={"mailer": "s3cret-pw"}) as fake:
        provider = provider_for(fake, username="mailer", password="s3cret-pw")
        send(provider)
        provider.close()
        assert [r.login for r in fake.received] == ["mailer"]


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
def test_tls_with_auth_delivers_encrypted(certificate: Certificate, tls: Tls) -> None:
    """STARTTLS on the submission port, or implicit TLS: encrypted, then authenticated."""
    with FakeSMTP(tls=tls, certificate=certificate, users={"mailer": "s3cret-pw"}) as fake:
        provider = provider_for(
            fake, tls=tls, certificate=certificate, username="mailer", password="s3cret-pw"
        )
        send(provider)
        provider.close()
        (received,) = fake.received
        assert received.tls and received.login == "mailer"


def test_bad_credentials_are_an_auth_failure_without_the_password(certificate: Certificate) -> None:
    """535: kind auth, logged as an error; the password appears nowhere."""
    with FakeSMTP(tls="starttls", certificate=certificate, users={"mailer": "right-pw"}) as fake:
        provider = provider_for(
            fake, tls="starttls", certificate=certificate, username="mailer", password="wr0ng-pw"
        )
        with capture_logs() as logs:
            error = failure(provider)
    assert (error.kind, error.status, error.outcome) == ("auth", 535, "definite")
    assert [entry["log_level"] for entry in logs] == ["error"]
    assert "wr0ng-pw" not in str(error) and "wr0ng-pw" not in repr(logs)


def test_an_untrusted_certificate_is_a_configuration_fault(certificate: Certificate) -> None:
    """The system's CAs do not vouch for the server: auth kind (fail over, tell the operator)."""
    with FakeSMTP(tls="ssl", certificate=certificate) as fake:
        error = failure(provider_for(fake, tls="ssl"))
    assert (error.kind, error.outcome) == ("auth", "definite")


def test_starttls_on_a_server_without_it_is_a_configuration_fault(server: FakeSMTP) -> None:
    """SMTP_TLS=starttls and the server offers none: never send in clear instead."""
    error = failure(provider_for(server, tls="starttls"))
    assert error.kind == "auth"
    assert server.received == []


def test_a_partial_refusal_delivers_to_the_others_and_reports_the_refused(server: FakeSMTP) -> None:
    """smtplib raises only when all are refused; one refused recipient comes back in SendResult.refused."""
    server.handler.refuse["bob@example.com"] = "550 5.1.1 No such user"
    result = send(provider_for(server), cc=["bob@example.com"])
    assert result.refused == {"bob@example.com": "550 5.1.1 No such user"}
    assert [r.rcpt_tos for r in server.received] == [["ada@example.com"]]


@pytest.mark.parametrize(
    ("reply", "kind"),
    [("550 5.1.1 No such user", "rejected"), ("450 4.2.1 Mailbox busy", "transient")],
)
def test_every_recipient_refused_raises_by_the_reply_class(server: FakeSMTP, reply: str, kind: str) -> None:
    """All refused: 5xx is the email's fault (rejected), 4xx a passing one (transient)."""
    server.handler.refuse["ada@example.com"] = reply
    error = failure(provider_for(server))
    assert (error.kind, error.status, error.outcome) == (kind, int(reply[:3]), "definite")
    assert "ada@example.com" in error.message


@pytest.mark.parametrize(
    ("reply", "kind"),
    [("451 4.3.0 Try again later", "transient"), ("554 5.7.1 Message refused", "rejected")],
)
def test_a_refused_message_is_classified_by_its_reply(server: FakeSMTP, reply: str, kind: str) -> None:
    """DATA answered 4xx or 5xx: definite, transient or rejected."""
    server.handler.data_replies.append(reply)
    error = failure(provider_for(server))
    assert (error.kind, error.status, error.outcome) == (kind, int(reply[:3]), "definite")


def test_several_sends_share_one_connection(server: FakeSMTP) -> None:
    """Three sends and a batch of two from one thread: one TCP connection."""
    provider = provider_for(server)
    for key in ("id:1", "id:2", "id:3"):
        send(provider, key)
    results = provider.send_batch([sample("id:4"), sample("id:5")])
    provider.close()
    assert all(isinstance(r, SendResult) for r in results)
    assert len(server.received) == 5
    assert len({r.peer for r in server.received}) == 1


def test_a_connection_the_server_closed_is_replaced_transparently() -> None:
    """The server drops an idle connection; the next send reconnects once and succeeds."""
    with FakeSMTP(idle_timeout_s=0.2) as fake:
        provider = provider_for(fake)
        send(provider, "id:1")
        wait_for(lambda: fake.closed >= 1, what="the server to close the idle connection")
        send(provider, "id:2")
        provider.close()
        assert len(fake.received) == 2
        assert len({r.peer for r in fake.received}) == 2


def test_no_answer_to_data_is_an_unknown_outcome(server: FakeSMTP) -> None:
    """A timeout after DATA: transient, and the server may have taken it."""
    server.handler.data_delay_s = 2.0
    error = failure(provider_for(server, timeout_s=0.3))
    assert (error.kind, error.outcome) == ("transient", "unknown")


def test_a_refused_connection_is_definite() -> None:
    """Nothing listening: transient, nothing sent."""
    provider = SMTPProvider(
        "127.0.0.1", unused_port(), tls="none", timeout_s=2.0, local_hostname="client.test"
    )
    error = failure(provider)
    assert (error.kind, error.outcome) == ("transient", "definite")


def test_the_factory_builds_smtp_from_settings(
    certificate: Certificate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TASKMASTER_SMTP_* give a provider that sends with STARTTLS and AUTH."""
    # smtplib names this machine in EHLO by its FQDN; the test looks nothing up.
    monkeypatch.setattr("socket.getfqdn", lambda name="": "client.test")
    with FakeSMTP(tls="starttls", certificate=certificate, users={"mailer": "pw-123"}) as fake:
        settings = load_settings(
            {
                "TASKMASTER_DATA_DIR": str(tmp_path),
                "TASKMASTER_EMAIL_FROM": "sender@example.com",
                "TASKMASTER_EMAIL_PROVIDERS": "smtp",
                "TASKMASTER_SMTP_HOST": fake.host,
                "TASKMASTER_SMTP_PORT": str(fake.port),
                "TASKMASTER_SMTP_USERNAME": "mailer",
                "TASKMASTER_SMTP_PASSWORD": "pw-123",
                "TASKMASTER_SMTP_TLS": "starttls",
            }
        )
        (provider,) = build_providers(settings, smtp_ssl_context=certificate.client_context())
        assert isinstance(provider, SMTPProvider)
        send(provider)
        provider.close()
        assert [r.login for r in fake.received] == ["mailer"]


def test_missing_provider_settings_are_named(tmp_path: Path) -> None:
    """Each configured provider's missing setting is named in one ConfigError."""
    settings = load_settings(
        {
            "TASKMASTER_DATA_DIR": str(tmp_path),
            "TASKMASTER_EMAIL_FROM": "sender@example.com",
            "TASKMASTER_EMAIL_PROVIDERS": "smtp,resend",
            "TASKMASTER_RESEND_BASE_URL": "https://api.resend.test/v1",
        }
    )
    with pytest.raises(ConfigError) as caught:
        check_provider_settings(settings)
    text = str(caught.value)
    assert "TASKMASTER_SMTP_HOST" in text and "TASKMASTER_RESEND_API_KEY" in text
    assert "TASKMASTER_RESEND_BASE_URL" in text
