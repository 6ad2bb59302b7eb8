"""Where a webhook may go: refuse private, loopback, link-local and other internal addresses.

The check is made on the RESOLVED addresses, at connection time, and the connection is then
opened to exactly the addresses checked (``AddressGuard.connect``), so a name that resolves to
a public address for a check and to 10.0.0.1 for the connection (DNS rebinding) gets nowhere.
Written by hand: the one library for this (``advocate``) is unmaintained since 2020.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any

from jobs.webhooks.errors import TargetRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses to try, in order, as text ("10.0.0.1", "::1").
Resolver = Callable[[str, int], Sequence[str]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def system_resolve(host: str, port: int) -> list[str]:
    """The system resolver's addresses for ``host``, without duplicates, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refusal(address: str) -> str | None:
    """Why ``address`` is not a public unicast address, or None when it is one."""
    try:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        # Addresses that carry an IPv4 address reach it: judge that one.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            reason = refusal(str(embedded))
            return None if reason is None else f"{reason} (embedded in {ip})"
    for reason, hit in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
    ):
        if hit:
            return reason
    return None


class AddressGuard:
    """Resolves a target, refuses it unless every address is public, and connects to those."""

    def __init__(self, *, allow_private: bool, resolve: Resolver = system_resolve) -> None:
        self.allow_private = allow_private
        self._resolve = resolve

    def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses of ``host``; TargetRefused when any is internal.

        One internal address refuses the whole name: a public name has no business resolving
        to an internal address, and trying the public ones first would only hide the attempt.
        """
        addresses = list(self._resolve(host.strip("[]"), port))
        if not addresses:
            raise OSError(f"{host} resolved to no address")
        if not self.allow_private:
            for address in addresses:
                reason = refusal(address)
                if reason is not None:
                    raise TargetRefused(f"{host} resolves to {address}, a {reason} address")
        return addresses

    def connect(
        self,
        host: str,
        port: int,
        *,
        timeout_s: float | None,
        source_address: tuple[str, int] | None = None,
        socket_options: Sequence[tuple[int, int, Any]] | None = None,
    ) -> socket.socket:
        """A socket connected to one of the checked addresses of ``host``, tried in order."""
        last_error: OSError | None = None
        for address in self.addresses(host, port):
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(timeout_s)
                if source_address is not None:
                    sock.bind(source_address)
                sock.connect((address, port))
                return sock
            except OSError as exc:
                sock.close()
                last_error = exc
        assert last_error is not None
        raise last_error
