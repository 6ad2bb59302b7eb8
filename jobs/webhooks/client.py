"""One HTTP delivery attempt: POST, no redirects, a deadline, a capped response body.

Built on urllib3 rather than requests: the attempt needs its own connection class (to connect
only to addresses the guard checked) and requests' adapters add nothing here but environment
proxies, which must not apply to webhooks anyway.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import make_headers, parse_url

from jobs.webhooks.errors import TargetRefused
from jobs.webhooks.targets import AddressGuard
from worker.logging import redact_text

READ_CHUNK_BYTES = 16 * 1024


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt got; ``error`` is None exactly when the receiver answered 2xx."""

    status: int | None
    error: str | None
    body: bytes = b""
    truncated: bool = False
    retry_after_s: float | None = None
    refused: bool = False
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class _Deadline:
    """Shuts the attempt's socket down when its time is up, whichever phase it is in.

    urllib3's timeouts bound each socket operation, not the whole attempt: a receiver dripping
    one byte at a time would hold a worker thread for ever. The watchdog bounds the total.
    """

    def __init__(self, timeout_s: float) -> None:
        self._at = time.monotonic() + timeout_s
        self._timer: threading.Timer | None = None
        self.expired = False

    def remaining_s(self) -> float:
        return max(0.001, self._at - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        self._timer = threading.Timer(self.remaining_s(), self._expire, args=(sock,))
        self._timer.daemon = True
        self._timer.start()

    def _expire(self, sock: socket.socket) -> None:
        self.expired = True
        # Already closed: the attempt ended in time after all.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _open(conn: HTTPConnection, guard: AddressGuard, deadline: _Deadline) -> socket.socket:
    """urllib3's ``_new_conn`` through the guard, with urllib3's own error translation."""
    try:
        sock = guard.connect(
            conn.host,
            conn.port,
            timeout_s=min(deadline.remaining_s(), conn.timeout or deadline.remaining_s()),
            source_address=conn.source_address,
            socket_options=conn.socket_options,
        )
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    except TimeoutError as exc:
        raise ConnectTimeoutError(conn, f"connection to {conn.host} timed out") from exc
    except OSError as exc:
        raise NewConnectionError(conn, f"failed to connect: {exc}") from exc
    deadline.watch(sock)
    return sock


class _GuardedHTTPConnection(HTTPConnection):
    def __init__(self, *args: Any, guard: AddressGuard, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard
        self._deadline = deadline

    def _new_conn(self) -> socket.socket:
        return _open(self, self._guard, self._deadline)


class _GuardedHTTPSConnection(HTTPSConnection):
    def __init__(self, *args: Any, guard: AddressGuard, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = guard
        self._deadline = deadline

    def _new_conn(self) -> socket.socket:
        # TLS (SNI, certificate check) still runs on the host name, over the checked socket.
        return _open(self, self._guard, self._deadline)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    guard: AddressGuard,
    timeout_s: float,
    max_response_bytes: int,
) -> AttemptResult:
    """POST ``body`` to ``url`` once; every failure is returned, none raised."""
    parsed = parse_url(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return AttemptResult(status=None, error="the URL is not an http(s) URL with a host")
    headers = dict(headers)
    if parsed.auth:
        headers.update(make_headers(basic_auth=parsed.auth))
    deadline = _Deadline(timeout_s)
    pool_cls = _GuardedHTTPSPool if parsed.scheme == "https" else _GuardedHTTPPool
    pool = pool_cls(
        parsed.host,
        parsed.port,
        timeout=Timeout(connect=timeout_s, read=timeout_s),
        retries=False,
        maxsize=1,
        guard=guard,
        deadline=deadline,
    )
    try:
        return _attempt(pool, parsed.request_uri, body, headers, deadline, max_response_bytes)
    finally:
        deadline.cancel()
        pool.close()


def _attempt(
    pool: HTTPConnectionPool,
    path: str,
    body: bytes,
    headers: dict[str, str],
    deadline: _Deadline,
    max_response_bytes: int,
) -> AttemptResult:
    try:
        response = pool.urlopen(
            "POST",
            path,
            body=body,
            headers=headers,
            redirect=False,
            retries=False,
            preload_content=False,
            decode_content=False,
            release_conn=False,
            assert_same_host=False,
        )
    except TargetRefused as exc:
        return AttemptResult(status=None, error=f"refused: {exc}", refused=True)
    except (ConnectTimeoutError, ReadTimeoutError):
        return AttemptResult(status=None, error="timed out", timed_out=True)
    except SSLError as exc:
        return AttemptResult(status=None, error=redact_text(f"TLS error: {exc}"))
    except (HTTPError, OSError) as exc:
        if deadline.expired:
            return AttemptResult(status=None, error="timed out", timed_out=True)
        return AttemptResult(status=None, error=redact_text(f"connection failed: {_reason(exc)}"))
    try:
        received, truncated = _read_capped(response, max_response_bytes)
    finally:
        # Never back to a pool: the rest of an oversized body is left unread on purpose.
        response.close()
    status = response.status
    if deadline.expired:
        # Cut off somewhere in the answer (its headers end early on a shut socket): whatever
        # arrived is not a whole answer in time.
        return AttemptResult(status, "timed out", received, True, timed_out=True)
    retry_after = _retry_after_s(response.headers.get("retry-after"))
    if 200 <= status < 300:
        error = None
    elif 300 <= status < 400:
        error = f"HTTP {status}: redirects are not followed; update the endpoint's URL"
    else:
        error = f"HTTP {status}"
    return AttemptResult(status, error, received, truncated, retry_after)


def _read_capped(response: Any, max_bytes: int) -> tuple[bytes, bool]:
    """At most ``max_bytes`` of the raw body; True when more was left unread (or cut by time)."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size < max_bytes:
            chunk = response.read(min(READ_CHUNK_BYTES, max_bytes - size), decode_content=False)
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
    except (HTTPError, OSError):
        return b"".join(chunks), True
    remaining = response.length_remaining
    return b"".join(chunks), remaining is None or remaining > 0


def _reason(exc: BaseException) -> str:
    """The innermost cause's text: urllib3 wraps it in messages naming connection objects."""
    while exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__):
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return f"{type(exc).__name__}: {exc}"


def _retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as delay seconds or an HTTP date (RFC 9110, 10.2.3); None when absent."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
