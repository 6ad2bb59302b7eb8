"""A small threaded HTTP server to stand in for a provider's API, on a free loopback port.

A subclass answers like the real service in ``handle``; tests then program what the service
does next (``fail_next`` with a documented error answer, ``drop_next`` to hang up without an
answer, ``delay_s`` to answer late) and read what it received (``received``). HTTP/1.1 with
keep-alive, so that clients reusing connections can be observed (``connections``).
"""

from __future__ import annotations

import json
import sys
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(
            status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    @classmethod
    def text(cls, status: int, text: str, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})})


# Hang up after reading the request, without a word: the client cannot know what happened.
DROP = Reply(0)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    # Header names lower-cased: HTTP header names are case-insensitive.
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return json.loads(self.body)


class FakeHTTPServer:
    """Override ``handle`` to answer a request as the real service does."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        # Every answer waits this long first (the benchmarks' "answers after 50 ms").
        self.delay_s = delay_s
        self.received: list[Request] = []
        self.connections = 0
        self._scripted: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed answers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, reply: Reply, times: int = 1) -> None:
        """The next ``times`` requests get ``reply`` instead of the service's answer."""
        with self._lock:
            self._scripted.extend([reply] * times)

    def drop_next(self, times: int = 1) -> None:
        self.fail_next(DROP, times)

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    def _respond(self, request: Request) -> Reply:
        with self._lock:
            self.received.append(request)
            scripted = self._scripted.popleft() if self._scripted else None
        if self.delay_s:
            self._stopping.wait(self.delay_s)
        if scripted is not None:
            return scripted
        try:
            return self.handle(request)
        except Exception as exc:  # a bug in the fake shows up in the test that met it
            return Reply.text(500, f"fake failed: {type(exc).__name__}: {exc}")

    def _connected(self) -> None:
        with self._lock:
            self.connections += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Clients that open many connections at once (the sendgrid library) are not reset.
    request_queue_size = 128
    fake: FakeHTTPServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout, a hang-up) is part of the tests, not a fault.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm holds the second
    # ~40 ms on a kept-alive connection.
    disable_nagle_algorithm = True
    server: _Server
    # An idle kept-alive connection ends on its own.
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self.server.fake._connected()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.fake._respond(Request(self.command, self.path, headers, body))
        if reply is DROP:
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``received`` instead."""
