"""The daemon's HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``.

The standard library's ThreadingHTTPServer in a daemon thread, no framework: three read-only
routes for Prometheus and for load balancers or systemd-side health checks.

- ``GET /metrics``: Prometheus text format (OpenMetrics when the scraper asks for it). With
  ``multiproc_dir`` (the daemon's PROMETHEUS_MULTIPROC_DIR) it adds up every process's files.
- ``GET /healthz``: 200 while the process serves requests.
- ``GET /readyz``: 200 when ``ready()`` says so, else 503; both with the checks as JSON.

HEAD is answered on every route. Requests are logged through structlog at debug level.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from worker.logging import get_logger

log = get_logger(__name__)

ReadyCheck = Callable[[], tuple[bool, dict[str, str]]]

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


class HttpServer:
    """Serves the routes above on ``host:port`` (port 0 binds a free port, see ``address``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ready: ReadyCheck,
        registry: CollectorRegistry | None = None,
        multiproc_dir: str | None = None,
        collectors: Sequence[Collector] = (),
    ) -> None:
        if registry is not None and multiproc_dir is not None:
            # In multiprocess mode this process's own metrics are in the files too: both would
            # count them twice.
            raise ValueError("give either registry or multiproc_dir, not both")
        self._host = host
        self._port = port
        self._ready = ready
        self._registry = registry if registry is not None else REGISTRY
        if multiproc_dir is not None:
            from prometheus_client import multiprocess

            self._registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._registry, path=multiproc_dir)
        # Values read at scrape time (queue depths from Redis), beside the counted ones.
        for collector in collectors:
            self._registry.register(collector)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); only known once started."""
        if self._server is None:
            raise RuntimeError("HttpServer.address: not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Bind (OSError when the address is taken) and serve in a daemon thread."""
        if self._server is not None:
            return
        self._server = _Server((self._host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self._thread.start()
        log.debug("http.started", host=self.address[0], port=self.address[1])

    def stop(self) -> None:
        """Stop serving and close the socket; requests in flight finish in their own threads."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        self._server = self._thread = None

    # Routes: each returns (status, content type, body).

    def _route(self, path: str, accept: str | None) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return self._metrics(accept)
        if path == "/healthz":
            return HTTPStatus.OK, _TEXT, b"ok\n"
        if path == "/readyz":
            return self._readyz()
        return HTTPStatus.NOT_FOUND, _TEXT, b"not found: try /metrics, /healthz or /readyz\n"

    def _metrics(self, accept: str | None) -> tuple[int, str, bytes]:
        encoder, content_type = choose_encoder(accept or "")
        try:
            return HTTPStatus.OK, content_type, encoder(self._registry)
        except Exception:
            log.exception("http.metrics_failed")
            return HTTPStatus.INTERNAL_SERVER_ERROR, _TEXT, b"metrics collection failed\n"

    def _readyz(self) -> tuple[int, str, bytes]:
        try:
            ready, checks = self._ready()
        except Exception as exc:
            log.exception("http.ready_check_failed")
            ready, checks = False, {"readiness": f"check raised {type(exc).__name__}"}
        body: dict[str, Any] = {"ready": ready, "checks": checks}
        if not ready:
            body["failed"] = sorted(name for name, value in checks.items() if value != "ok")
        status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
        return status, _JSON, json.dumps(body, sort_keys=True).encode() + b"\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: HttpServer) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), a DNS query that can
        # hang start-up on a machine with slow or no DNS; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "taskmaster-worker"
    timeout = 10  # a client that stalls mid-request does not hold a thread for ever

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, _TEXT, b"method not allowed\n", head=False, allow=True)

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def _respond(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        status, content_type, body = self.server.app._route(path, self.headers.get("Accept"))
        self._send(status, content_type, body, head=head)

    def _send(self, status: int, content_type: str, body: bytes, *, head: bool, allow: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if allow:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = code.value if isinstance(code, HTTPStatus) else code
        log.debug(
            "http.request", method=self.command, path=self.path, status=status, client=self.client_address[0]
        )

    def log_message(self, format: str, *args: Any) -> None:
        # Everything else http.server reports (timeouts, malformed requests), which it would
        # otherwise print to stderr.
        log.debug("http.message", message=format % args, client=self.client_address[0])
