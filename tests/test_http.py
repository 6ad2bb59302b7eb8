"""worker.http: real HTTP requests with urllib to the server bound on a free loopback port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry, Counter

from worker import http as http_module
from worker.http import HttpServer

Ready = Callable[[], tuple[bool, dict[str, str]]]


def always_ready() -> tuple[bool, dict[str, str]]:
    return True, {"redis": "ok", "database": "ok"}


@pytest.fixture
def serve() -> Iterator[Callable[..., HttpServer]]:
    """Start servers on 127.0.0.1 port 0 and stop them after the test."""
    started: list[HttpServer] = []

    def start(ready: Ready = always_ready, **kwargs: Any) -> HttpServer:
        server = HttpServer("127.0.0.1", 0, ready=ready, **kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def request(server: HttpServer, path: str, method: str = "GET", **headers: str) -> tuple[int, Any, bytes]:
    """(status, headers, body) of one request, error statuses included."""
    host, port = server.address
    req = urllib.request.Request(f"http://{host}:{port}{path}", method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def test_address_is_the_bound_port(serve: Callable[..., HttpServer]) -> None:
    """Port 0 binds a free port, which address reports."""
    server = serve()
    host, port = server.address
    assert host == "127.0.0.1"
    assert port > 0


def test_healthz(serve: Callable[..., HttpServer]) -> None:
    """/healthz answers 200 ok while the process serves."""
    status, headers, body = request(serve(), "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert headers["Content-Type"].startswith("text/plain")


def test_readyz_ready(serve: Callable[..., HttpServer]) -> None:
    """/readyz answers 200 with the checks as JSON when ready() says so."""
    status, headers, body = request(serve(), "/readyz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"ready": True, "checks": {"redis": "ok", "database": "ok"}}


def test_readyz_not_ready_names_the_failed_check(serve: Callable[..., HttpServer]) -> None:
    """/readyz answers 503 and names the check that failed."""

    def redis_down() -> tuple[bool, dict[str, str]]:
        return False, {"redis": "unavailable: ConnectionError", "database": "ok"}

    status, _, body = request(serve(ready=redis_down), "/readyz")
    assert status == 503
    assert json.loads(body) == {
        "ready": False,
        "checks": {"redis": "unavailable: ConnectionError", "database": "ok"},
        "failed": ["redis"],
    }


def test_readyz_check_that_raises_is_not_ready(serve: Callable[..., HttpServer]) -> None:
    """A readiness check that raises makes a 503, not a dropped connection."""

    def broken() -> tuple[bool, dict[str, str]]:
        raise RuntimeError("boom")

    status, _, body = request(serve(ready=broken), "/readyz")
    assert status == 503
    assert json.loads(body)["failed"] == ["readiness"]


def test_readyz_asks_on_every_request(serve: Callable[..., HttpServer]) -> None:
    """Readiness is computed per request, so it follows the daemon's state."""
    state = {"ready": False}

    def ready() -> tuple[bool, dict[str, str]]:
        return state["ready"], {"workers": "ok" if state["ready"] else "none running"}

    server = serve(ready=ready)
    assert request(server, "/readyz")[0] == 503
    state["ready"] = True
    assert request(server, "/readyz")[0] == 200


def test_metrics_from_the_given_registry(serve: Callable[..., HttpServer]) -> None:
    """/metrics renders the given registry in the Prometheus text format."""
    registry = CollectorRegistry()
    Counter("taskmaster_test_things", "Things counted by the test", registry=registry).inc(3)
    status, headers, body = request(serve(registry=registry), "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    assert "taskmaster_test_things_total 3.0" in body.decode()


def test_metrics_openmetrics_when_asked(serve: Callable[..., HttpServer]) -> None:
    """A scraper that accepts OpenMetrics gets it."""
    registry = CollectorRegistry()
    Counter("taskmaster_test_things", "Things", registry=registry).inc()
    accept = "application/openmetrics-text; version=1.0.0"
    status, headers, body = request(serve(registry=registry), "/metrics", Accept=accept)
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")


def test_metrics_default_registry(serve: Callable[..., HttpServer]) -> None:
    """Without a registry, /metrics renders prometheus_client's global one."""
    _, _, body = request(serve(), "/metrics")
    assert "python_info" in body.decode()


def test_metrics_adds_up_processes(serve: Callable[..., HttpServer], tmp_path: Path) -> None:
    """With multiproc_dir, /metrics adds up what separate processes counted."""
    script = (
        "from prometheus_client import Counter\n"
        "Counter('taskmaster_test_jobs', 'Jobs', ['type']).labels('email.send').inc(2)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], env=env, check=True)
    _, _, body = request(serve(multiproc_dir=str(tmp_path)), "/metrics")
    assert 'taskmaster_test_jobs_total{type="email.send"} 4.0' in body.decode()


def test_registry_and_multiproc_dir_are_exclusive(tmp_path: Path) -> None:
    """Both a registry and a multiprocess directory would count this process twice: refused."""
    with pytest.raises(ValueError, match="not both"):
        HttpServer(
            "127.0.0.1", 0, ready=always_ready, registry=CollectorRegistry(), multiproc_dir=str(tmp_path)
        )


def test_head_has_headers_without_body(serve: Callable[..., HttpServer]) -> None:
    """HEAD answers like GET, with the length of the body it does not send."""
    server = serve()
    status, headers, body = request(server, "/readyz", method="HEAD")
    assert status == 200
    assert body == b""
    assert int(headers["Content-Length"]) == len(request(server, "/readyz")[2])


def test_unknown_path_is_404(serve: Callable[..., HttpServer]) -> None:
    """Any other path is 404; a query string does not change the route."""
    server = serve()
    assert request(server, "/")[0] == 404
    assert request(server, "/metrics/extra")[0] == 404
    assert request(server, "/healthz?verbose=1")[0] == 200


def test_other_methods_are_405(serve: Callable[..., HttpServer]) -> None:
    """Writing methods are refused with the allowed ones named."""
    status, headers, _ = request(serve(), "/healthz", method="POST")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"


def test_requests_are_logged_at_debug_not_printed(
    serve: Callable[..., HttpServer], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A request goes to structlog at debug level, and http.server prints nothing to stderr."""
    with structlog.testing.capture_logs() as logs:
        # A logger of its own, bound under the capturing configuration.
        monkeypatch.setattr(http_module, "log", structlog.get_logger("worker.http"))
        request(serve(), "/healthz")
        server_requests = [entry for entry in logs if entry["event"] == "http.request"]
    assert server_requests == [
        {"event": "http.request", "log_level": "debug", "method": "GET", "path": "/healthz", "status": 200,
         "client": "127.0.0.1"}
    ]  # fmt: skip
    assert "HTTP/1.1" not in capfd.readouterr().err


def test_stop_frees_the_port(serve: Callable[..., HttpServer]) -> None:
    """After stop() nothing answers, and stop() can be called again."""
    server = serve()
    host, port = server.address
    server.stop()
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5)


def test_address_before_start_is_an_error() -> None:
    """The address is only known once the socket is bound."""
    with pytest.raises(RuntimeError, match="not started"):
        _ = HttpServer("127.0.0.1", 0, ready=always_ready).address


def test_taken_port_raises_on_start(serve: Callable[..., HttpServer]) -> None:
    """Starting on a port in use raises OSError, for the daemon to report."""
    _, port = serve().address
    with pytest.raises(OSError):
        HttpServer("127.0.0.1", port, ready=always_ready).start()
