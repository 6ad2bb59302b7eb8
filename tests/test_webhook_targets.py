"""Webhook targets: internal addresses are refused on the resolved address, before connecting."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jobs.webhooks import client
from jobs.webhooks.errors import TargetRefused
from jobs.webhooks.targets import AddressGuard, refusal
from tests.fakes.webhook_receiver import WebhookReceiver

REFUSED = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",  # cloud metadata
    "0.0.0.0",
    "100.64.0.1",  # carrier-grade NAT
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%lo",
    "fc00::1",
    "fd12:3456:789a::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2001:db8::1",  # documentation
]
ALLOWED = ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED)
def test_internal_addresses_are_refused(address: str) -> None:
    """Private, loopback, link-local, multicast, unspecified and embedded-internal addresses."""
    assert refusal(address) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_unicast_addresses_are_allowed(address: str) -> None:
    """Public addresses, also when carried in IPv4-mapped or NAT64 form."""
    assert refusal(address) is None


class NoSockets:
    """Stands in for socket.socket: any attempt to open one is recorded and fails the attempt."""

    def __init__(self) -> None:
        self.opened: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> socket.socket:
        self.opened.append(args)
        raise AssertionError("a socket was opened")


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[NoSockets]:
    spy = NoSockets()
    monkeypatch.setattr(socket, "socket", spy)
    monkeypatch.setattr(socket, "create_connection", spy)
    yield spy


@pytest.mark.parametrize("resolved", ["10.0.0.1", "169.254.169.254", "::ffff:127.0.0.1", "fd00::5"])
def test_a_name_resolving_inside_is_refused_without_opening_a_socket(
    no_sockets: NoSockets, resolved: str
) -> None:
    """A public-looking name whose resolved address is internal is refused before any socket."""
    asked: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return [resolved]

    guard = AddressGuard(allow_private=False, resolve=resolve)
    result = client.post(
        "https://hooks.example.com/in", b"{}", {}, guard=guard, timeout_s=1, max_response_bytes=100
    )
    assert result.refused and not result.ok and result.status is None
    assert resolved in (result.error or "")
    assert asked == [("hooks.example.com", 443)]
    assert no_sockets.opened == []


def test_one_internal_address_among_public_ones_refuses_the_name(no_sockets: NoSockets) -> None:
    """Every resolved address is checked: a single internal one refuses the target."""
    guard = AddressGuard(allow_private=False, resolve=lambda host, port: ["93.184.216.34", "10.1.2.3"])
    with pytest.raises(TargetRefused, match=r"10\.1\.2\.3"):
        guard.connect("mixed.example.com", 443, timeout_s=1)
    assert no_sockets.opened == []


class RecordingSocket:
    """A socket that records where it is asked to connect and never touches the network."""

    connected: list[tuple[Any, ...]] = []

    def __init__(self, *args: Any) -> None:
        pass

    def settimeout(self, value: float | None) -> None:
        pass

    def setsockopt(self, *args: Any) -> None:
        pass

    def connect(self, address: tuple[Any, ...]) -> None:
        RecordingSocket.connected.append(address)
        raise ConnectionRefusedError("recorded only")

    def close(self) -> None:
        pass


def test_the_connection_goes_to_the_address_checked_not_a_second_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS rebinding: the name is resolved once per connection and that checked address is used."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # a rebinding resolver's two answers
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return next(answers)

    RecordingSocket.connected = []
    monkeypatch.setattr(socket, "socket", RecordingSocket)
    guard = AddressGuard(allow_private=False, resolve=resolve)
    with pytest.raises(ConnectionRefusedError):
        guard.connect("rebind.example.com", 443, timeout_s=1)
    assert lookups == ["rebind.example.com"]
    assert RecordingSocket.connected == [("93.184.216.34", 443)]


def test_loopback_is_reached_when_private_targets_are_allowed() -> None:
    """With TASKMASTER_WEBHOOK_ALLOW_PRIVATE the guard lets a loopback receiver through."""
    with WebhookReceiver() as receiver:
        result = client.post(
            f"http://localhost:{receiver.port}/hook",
            b'{"x":1}',
            {"content-type": "application/json"},
            guard=AddressGuard(allow_private=True, resolve=lambda host, port: ["127.0.0.1"]),
            timeout_s=5,
            max_response_bytes=1000,
        )
        assert result.ok and result.status == 200
        (got,) = receiver.received
        assert got.body == b'{"x":1}' and got.headers["host"] == f"localhost:{receiver.port}"


def test_loopback_is_refused_when_private_targets_are_not_allowed() -> None:
    """The same receiver, with private targets off: refused, and the receiver hears nothing."""
    with WebhookReceiver() as receiver:
        result = client.post(
            receiver.url(),
            b"{}",
            {},
            guard=AddressGuard(allow_private=False),
            timeout_s=5,
            max_response_bytes=1000,
        )
        assert result.refused and "loopback" in (result.error or "")
        assert receiver.received == []


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_https_to_the_checked_address_still_verifies_the_names_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the pinned address, TLS sends the name as SNI and checks the certificate against it."""
    cert, key = _self_signed(tmp_path, "hooks.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server_names: list[str | None] = []
    context.sni_callback = lambda sock, server_name, ctx: server_names.append(server_name)
    with WebhookReceiver() as receiver:
        receiver.wrap_tls(context)
        guard = AddressGuard(allow_private=True, resolve=lambda host, port: ["127.0.0.1"])
        url = f"https://hooks.test:{receiver.port}/hook"
        untrusted = client.post(url, b"{}", {}, guard=guard, timeout_s=5, max_response_bytes=10)
        assert "certificate verify failed" in (untrusted.error or "") and receiver.received == []
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the receiver's certificate
        trusted = client.post(url, b"{}", {}, guard=guard, timeout_s=5, max_response_bytes=10)
        assert trusted.ok and len(receiver.received) == 1
    assert server_names == ["hooks.test", "hooks.test"]
