"""sd_notify in a few lines: tell systemd the daemon is ready, reloading, stopping, alive.

The protocol (sd_notify(3)): one datagram of newline-separated ``KEY=VALUE`` lines sent to the
AF_UNIX socket named by ``$NOTIFY_SOCKET``, a file system path or, with a leading ``@``, an
abstract socket. Without ``NOTIFY_SOCKET`` every method does nothing, so the daemon behaves the
same outside systemd. A notification that cannot be sent is logged, never raised: losing one
must not stop the daemon (at worst systemd's watchdog restarts it, which is its job).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from worker.logging import get_logger

log = get_logger(__name__)


class Notifier:
    """Sends notifications to the service manager named by ``environ`` (read once, here)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._address = _parse_address(environ.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = _parse_watchdog_usec(environ) if self._address is not None else None

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens for notifications."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to call watchdog(): half of WatchdogSec=, or None when no watchdog is armed."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self, status: str | None = None) -> None:
        """Start-up (or a reload) is complete: systemd moves the unit to active."""
        self._send("READY=1", *_status_line(status))

    def status(self, text: str) -> None:
        """A one-line description of the current state, shown by `systemctl status`."""
        self._send(*_status_line(text))

    def stopping(self) -> None:
        """Shutdown has begun."""
        self._send("STOPPING=1")

    def reloading(self) -> None:
        """A reload has begun; ready() ends it. MONOTONIC_USEC is what Type=notify-reload expects."""
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={now_usec}")

    def watchdog(self) -> None:
        """The daemon is alive: resets systemd's WatchdogSec= timer."""
        self._send("WATCHDOG=1")

    def _send(self, *lines: str) -> None:
        if self._address is None or not lines:
            return
        message = "\n".join(lines).encode("utf-8", "replace")
        try:
            # A socket per message: a few per minute at most, and nothing to close or to share
            # across threads and forks.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            log.warning("sdnotify.failed", message=lines[0], error=f"{type(exc).__name__}: {exc}")


def _parse_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    # systemd >= 253 may also pass vsock: addresses, which only VMs' service managers use.
    log.warning("sdnotify.unsupported_socket", notify_socket=value)
    return None


def _parse_watchdog_usec(environ: Mapping[str, str]) -> int | None:
    pid = environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None  # armed for another process of the tree (NotifyAccess=all set-ups)
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _status_line(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    # A newline would start a new KEY=VALUE assignment.
    return ("STATUS=" + " ".join(text.splitlines()),)
