"""An SMTP server on loopback: aiosmtpd's Controller with a recording, programmable handler.

aiosmtpd speaks the protocol (RFC 5321 replies, STARTTLS, implicit TLS, AUTH PLAIN/LOGIN with
535 for bad credentials); the handler decides each recipient's and each message's reply, so tests
can refuse some recipients, answer DATA with a 4xx or 5xx, or answer it late. The certificate for
TLS is made at test time with ``cryptography``; ``Certificate.client_context`` trusts it.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import ssl
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import wait_for

Tls = Literal["none", "starttls", "ssl"]


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost."""

    cert_file: Path
    key_file: Path
    pem: str

    @classmethod
    def create(cls, directory: Path) -> Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "taskmaster fake smtp")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        cert_file, key_file = directory / "cert.pem", directory / "key.pem"
        cert_file.write_text(pem)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cls(cert_file, key_file, pem)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """What a client needs to trust this server and nothing else."""
        return ssl.create_default_context(cadata=self.pem)


@dataclass(frozen=True)
class Received:
    # The client's (host, port): one value per TCP connection.
    peer: Any
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    login: str | None
    tls: bool


@dataclass
class Recorder:
    """The aiosmtpd handler: records what was accepted, replies as the test programmed."""

    received: list[Received] = field(default_factory=list)
    # Recipient (lower case) -> the reply refusing it, such as "550 5.1.1 No such user".
    refuse: dict[str, str] = field(default_factory=dict)
    # Replies to the next DATA commands, instead of accepting the message.
    data_replies: deque[str] = field(default_factory=deque)
    # How long to wait before answering DATA (a slow or hung server).
    data_delay_s: float = 0.0
    # Connections that have ended (the controller's own start-up probe is one).
    closed: int = 0

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        refusal = self.refuse.get(address.lower())
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        if self.data_delay_s:
            await asyncio.sleep(self.data_delay_s)
        if self.data_replies:
            return self.data_replies.popleft()
        content = envelope.original_content or b""
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        self.received.append(
            Received(
                session.peer,
                str(envelope.mail_from),
                list(envelope.rcpt_tos),
                content,
                login,
                # STARTTLS sets session.ssl; implicit TLS shows only on the transport.
                session.ssl is not None or _on_tls(server),
            )
        )
        return f"250 2.0.0 OK queued as {len(self.received)}"


def _on_tls(server: SMTPServer) -> bool:
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class _CountingSMTP(SMTPServer):
    recorder: Recorder

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.recorder.closed += 1


class _Controller(Controller):
    """Binds port 0 and learns the port the system chose before it checks the server is up."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()

    def factory(self) -> SMTPServer:
        server = _CountingSMTP(self.handler, **self.SMTP_kwargs)
        server.recorder = self.handler
        return server


class FakeSMTP:
    def __init__(
        self,
        *,
        tls: Tls = "none",
        certificate: Certificate | None = None,
        users: dict[str, str] | None = None,
        idle_timeout_s: float = 300.0,
    ) -> None:
        if tls != "none" and certificate is None:
            raise ValueError("TLS needs a certificate")
        self.tls = tls
        self.users = users
        self.handler = Recorder()
        self._probe_closed = 0
        # aiosmtpd logs each connection and a deprecation notice per AUTH on "mail.log".
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        # A server closes a connection idle for idle_timeout_s (aiosmtpd's `timeout`).
        kwargs: dict[str, Any] = {
            "server_hostname": "fake-smtp.test",
            "ready_timeout": 10.0,
            "timeout": idle_timeout_s,
        }
        if tls == "starttls" and certificate is not None:
            kwargs.update(tls_context=certificate.server_context(), require_starttls=True)
        if tls == "ssl" and certificate is not None:
            kwargs.update(ssl_context=certificate.server_context())
        if users is not None:
            # aiosmtpd only knows STARTTLS as TLS: under implicit TLS it must be told AUTH is fine.
            kwargs.update(authenticator=self._authenticate, auth_require_tls=tls == "starttls")
        self._controller = _Controller(self.handler, hostname="127.0.0.1", port=0, **kwargs)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def received(self) -> list[Received]:
        return list(self.handler.received)

    @property
    def closed(self) -> int:
        """Connections ended since start, the start-up probe not counted."""
        return self.handler.closed - self._probe_closed

    def start(self) -> Self:
        self._controller.start()
        # The controller's probe connection may end just after start() returns.
        wait_for(lambda: self.handler.closed >= 1, timeout_s=5, what="the start-up probe to hang up")
        self._probe_closed = self.handler.closed
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _authenticate(
        self, server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.users is None:
            return AuthResult(success=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        if self.users.get(login) != password:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=login.encode())
