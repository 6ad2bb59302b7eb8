"""A webhook receiver on a free loopback port, answering as a Standard Webhooks consumer does.

What it reproduces, from the Standard Webhooks specification 1.0.0
(github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md):
- "Webhook metadata" and "Webhook headers": it records the raw body and the `webhook-id`,
  `webhook-timestamp` and `webhook-signature` headers exactly as received, because the spec
  requires verifying "the payload sent" byte for byte, never a re-serialised JSON;
- "Delivery success and failure": its answer decides the outcome, 2xx is success, and a 3xx,
  410, 429, 5xx or a request timeout is a failure; it answers whatever a test scripts (status,
  headers such as Location or Retry-After, a body of any size, or no answer until released).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # The body is sent this many times: large answers without holding them in memory.
    repeat: int = 1
    # Answer only once this is set (or after 30 s): a receiver that hangs.
    hold: threading.Event | None = None
    # Send the answer one byte every this many seconds: a receiver that drips.
    drip_s: float | None = None


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


class WebhookReceiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.write_failures = 0  # answers the sender hung up on before taking them whole
        self._replies: deque[Reply] = deque()
        self._holds: list[threading.Event] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits for the serving loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wrap_tls(self, context: ssl.SSLContext) -> None:
        """Serve HTTPS with ``context`` (call before the first request)."""
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these, in order; then 200 with an empty body."""
        with self._lock:
            self._replies.extend(replies)
            self._holds.extend(r.hold for r in replies if r.hold is not None)

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.received]

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        for hold in self._holds:
            hold.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _next_reply(self, received: Received) -> Reply:
        with self._lock:
            self.received.append(received)
            return self._replies.popleft() if self._replies else Reply()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                reply = receiver._next_reply(Received(self.path, headers, body))
                if reply.hold is not None:
                    reply.hold.wait(30)
                if reply.drip_s is not None:
                    self._drip(reply)
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(reply.body) * reply.repeat))
                    self.end_headers()
                    for _ in range(reply.repeat):
                        self.wfile.write(reply.body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with receiver._lock:
                        receiver.write_failures += 1
                    self.close_connection = True

            def _drip(self, reply: Reply) -> None:
                head = f"HTTP/1.1 {reply.status} Slow\r\ncontent-length: {len(reply.body)}\r\n\r\n"
                try:
                    for byte in head.encode() + reply.body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(reply.drip_s or 0)
                except (BrokenPipeError, ConnectionResetError):
                    with receiver._lock:
                        receiver.write_failures += 1
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        return Handler
