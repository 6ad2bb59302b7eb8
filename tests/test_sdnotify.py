"""worker.sdnotify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker import sdnotify
from worker.sdnotify import Notifier


class Listener:
    """The service manager's end: a bound datagram socket that receives notifications."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(5)

    def receive(self) -> list[str]:
        """The lines of the next notification (waits for it, up to 5 s)."""
        return self.sock.recv(65536).decode().split("\n")

    def pending(self) -> bool:
        """Whether a notification is queued (sending is synchronous, so no waiting is needed)."""
        self.sock.setblocking(False)
        try:
            self.sock.recv(65536, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        finally:
            self.sock.settimeout(5)
        return True


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[Listener, dict[str, str]]]:
    """A listener bound to a path socket, and the environment systemd would give the daemon."""
    path = tmp_path / "notify.sock"
    bound = Listener(str(path))
    yield bound, {"NOTIFY_SOCKET": str(path)}
    bound.sock.close()


class RecordingLog:
    """Stands in for the module's structlog logger to see what it logs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.events.append(("warning", event, fields))


def test_ready_sends_ready_and_status(listener: tuple[Listener, dict[str, str]]) -> None:
    """ready() sends READY=1 with the status text, in one datagram."""
    sock, env = listener
    Notifier(env).ready("running: role all")
    assert sock.receive() == ["READY=1", "STATUS=running: role all"]


def test_ready_without_status(listener: tuple[Listener, dict[str, str]]) -> None:
    """ready() with no text sends READY=1 alone."""
    sock, env = listener
    Notifier(env).ready()
    assert sock.pending()
    assert sock.receive() == ["READY=1"]


def test_status_is_one_line(listener: tuple[Listener, dict[str, str]]) -> None:
    """A newline in a status cannot inject another assignment."""
    sock, env = listener
    Notifier(env).status("draining\nREADY=1")
    assert sock.receive() == ["STATUS=draining READY=1"]


def test_stopping_and_watchdog(listener: tuple[Listener, dict[str, str]]) -> None:
    """stopping() and watchdog() send their one assignment each."""
    sock, env = listener
    notifier = Notifier(env)
    notifier.watchdog()
    notifier.stopping()
    assert sock.receive() == ["WATCHDOG=1"]
    assert sock.receive() == ["STOPPING=1"]


def test_reloading_carries_the_monotonic_clock(listener: tuple[Listener, dict[str, str]]) -> None:
    """reloading() sends RELOADING=1 and MONOTONIC_USEC of CLOCK_MONOTONIC, as notify-reload expects."""
    sock, env = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier(env).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, monotonic = sock.receive()
    assert reloading == "RELOADING=1"
    key, _, value = monotonic.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_socket() -> None:
    """An address starting with '@' names an abstract socket."""
    name = f"taskmaster-test-{uuid.uuid4().hex}"
    sock = Listener(b"\0" + name.encode())
    try:
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.receive() == ["READY=1"]
    finally:
        sock.sock.close()


def test_nothing_happens_without_notify_socket(listener: tuple[Listener, dict[str, str]]) -> None:
    """Without NOTIFY_SOCKET every method is a no-op and nothing is sent anywhere."""
    sock, _ = listener
    notifier = Notifier({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    notifier.ready("x")
    notifier.status("x")
    notifier.reloading()
    notifier.watchdog()
    notifier.stopping()
    assert notifier.watchdog_interval_s is None
    assert not sock.pending()


def test_send_errors_are_logged_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket that is gone makes a warning in the log, never an exception."""
    recorder = RecordingLog()
    monkeypatch.setattr(sdnotify, "log", recorder)
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    notifier.ready("x")
    notifier.watchdog()
    assert [(level, event, fields["message"]) for level, event, fields in recorder.events] == [
        ("warning", "sdnotify.failed", "READY=1"),
        ("warning", "sdnotify.failed", "WATCHDOG=1"),
    ]
    assert "FileNotFoundError" in recorder.events[0][2]["error"]


def test_unsupported_address_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """An address that is neither a path nor abstract disables notifications with a warning."""
    recorder = RecordingLog()
    monkeypatch.setattr(sdnotify, "log", recorder)
    notifier = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    notifier.ready()
    assert [event for _, event, _ in recorder.events] == ["sdnotify.unsupported_socket"]


@pytest.mark.parametrize(
    ("watchdog", "expected_s"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(
    listener: tuple[Listener, dict[str, str]], watchdog: dict[str, str], expected_s: float | None
) -> None:
    """The ping interval is half of WatchdogSec=, and None when the watchdog is not ours."""
    _, env = listener
    assert Notifier({**env, **watchdog}).watchdog_interval_s == expected_s
