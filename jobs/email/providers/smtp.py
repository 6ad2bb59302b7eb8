"""SMTP through smtplib: one connection per worker thread, kept open and reused across sends.

A worker thread sends one email at a time, so a connection of its own needs no pool and no
locking. A connection idle for a while is checked with NOOP before it is used again, and one
the server has closed meanwhile is replaced; when the server drops it before DATA, the send is
tried once more on a new connection, since nothing was handed over.

smtplib raises only when every recipient is refused; a partial refusal comes back from
``send_message`` and is reported in ``SendResult.refused``.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal

from jobs.email.message import Outgoing
from jobs.email.providers.base import BatchItem, SendResult, send_each
from jobs.email.providers.errors import (
    MISCONFIGURED,
    NO_ANSWER,
    NOT_SENT,
    ProviderError,
    classify,
    log_failure,
)

Tls = Literal["none", "starttls", "ssl"]

# Servers close idle connections (RFC 5321 4.5.3.2: after 5 minutes at the least); past this
# idle time a connection is checked with NOOP before it is trusted with an email.
IDLE_CHECK_S = 10.0


class _SMTP(smtplib.SMTP):
    """Remembers whether DATA went out: a failure after it may have delivered the email."""

    data_started = False

    def data(self, msg: Any) -> tuple[int, bytes]:
        self.data_started = True
        return super().data(msg)


class _SMTPSSL(_SMTP, smtplib.SMTP_SSL):
    pass


@dataclass
class _Connection:
    smtp: _SMTP
    last_used_s: float


class SMTPProvider:
    name = "smtp"
    max_batch = 1

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: Tls,
        timeout_s: float,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls: Tls = tls
        self._timeout_s = timeout_s
        self._username = username
        self._password = password
        # Tests pass a context that trusts their own certificate; otherwise the system's CAs.
        self._ssl_context = ssl_context or ssl.create_default_context()
        # The name given in EHLO; None lets smtplib use this machine's FQDN.
        self._local_hostname = local_hostname
        self._local = threading.local()
        self._open: list[_Connection] = []
        self._lock = threading.Lock()

    def send(self, message: Outgoing, *, idempotency_key: str, envelope_to: list[str]) -> SendResult:
        for attempt in (1, 2):
            conn, reused = self._connection()
            smtp = conn.smtp
            smtp.data_started = False
            try:
                refused = smtp.send_message(message.mime, to_addrs=envelope_to)
            except smtplib.SMTPRecipientsRefused as exc:
                raise _logged(_all_refused(exc.recipients)) from exc
            except smtplib.SMTPResponseException as exc:
                if exc.smtp_code == 421:
                    # "Closing transmission channel": smtplib has closed it; a server closing an
                    # idle connection says so to the next command, before anything went out.
                    self._drop(conn)
                    if reused and not smtp.data_started and attempt == 1:
                        continue
                error = classify(self.name, exc.smtp_code, _reply(exc.smtp_code, exc.smtp_error))
                raise _logged(error) from exc
            except (smtplib.SMTPException, OSError) as exc:
                self._drop(conn)
                if reused and not smtp.data_started and attempt == 1:
                    continue  # the server had closed the idle connection: nothing went out
                status = NO_ANSWER if smtp.data_started else NOT_SENT
                when = "after" if smtp.data_started else "before"
                error = classify(
                    self.name, status, f"connection lost {when} DATA: {type(exc).__name__}: {exc}"
                )
                raise _logged(error) from exc
            conn.last_used_s = time.monotonic()
            return SendResult(
                self.name,
                message.message_id,
                refused={address: _reply(code, text) for address, (code, text) in refused.items()},
            )
        raise AssertionError("unreachable: the second attempt returns or raises")

    def send_batch(self, items: Sequence[BatchItem]) -> list[SendResult | ProviderError]:
        """One email after the other over this thread's connection."""
        return send_each(self.send, items)

    def close(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            _quit(conn.smtp)
        self._local = threading.local()

    def _connection(self) -> tuple[_Connection, bool]:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None and time.monotonic() - conn.last_used_s > IDLE_CHECK_S and not _alive(conn.smtp):
            self._drop(conn)
            conn = None
        if conn is not None:
            return conn, True
        conn = _Connection(self._connect(), time.monotonic())
        self._local.conn = conn
        with self._lock:
            self._open.append(conn)
        return conn, False

    def _connect(self) -> _SMTP:
        smtp: _SMTP | None = None
        try:
            if self.tls == "ssl":
                smtp = _SMTPSSL(
                    self.host,
                    self.port,
                    self._local_hostname,
                    timeout=self._timeout_s,
                    context=self._ssl_context,
                )
            else:
                smtp = _SMTP(self.host, self.port, self._local_hostname, timeout=self._timeout_s)
            if self.tls == "starttls":
                smtp.starttls(context=self._ssl_context)
            if self._username:
                smtp.login(self._username, self._password or "")
            return smtp
        except smtplib.SMTPNotSupportedError as exc:
            error = classify(self.name, MISCONFIGURED, f"the server does not offer it: {exc}")
            raise self._session_failed(smtp, error) from exc
        except smtplib.SMTPResponseException as exc:
            reply = _reply(exc.smtp_code, exc.smtp_error)
            error = classify(self.name, exc.smtp_code, reply, code="session", secrets=self._secrets)
            raise self._session_failed(smtp, error) from exc
        except (smtplib.SMTPException, OSError) as exc:
            status = MISCONFIGURED if isinstance(exc, ssl.SSLCertVerificationError) else NOT_SENT
            error = classify(self.name, status, f"could not open a session: {type(exc).__name__}: {exc}")
            raise self._session_failed(smtp, error) from exc

    def _session_failed(self, smtp: smtplib.SMTP | None, error: ProviderError) -> ProviderError:
        if smtp is not None:
            _quit(smtp)
        return _logged(error)

    def _drop(self, conn: _Connection) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock, suppress(ValueError):
            self._open.remove(conn)
        _quit(conn.smtp)

    @property
    def _secrets(self) -> tuple[str, ...]:
        return (self._password,) if self._password else ()


def _logged(error: ProviderError) -> ProviderError:
    log_failure(error)
    return error


def _all_refused(recipients: dict[str, tuple[int, bytes]]) -> ProviderError:
    """Every recipient refused: transient if any refusal was, so that a retry can reach them."""
    codes = [code for code, _ in recipients.values()]
    code = next((c for c in codes if 400 <= c < 500), codes[0] if codes else 550)
    detail = "; ".join(f"{address}: {_reply(c, text)}" for address, (c, text) in recipients.items())
    return classify("smtp", code, f"every recipient refused: {detail}")


def _reply(code: int, text: bytes | str) -> str:
    decoded = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{code} {decoded}"


def _alive(smtp: smtplib.SMTP) -> bool:
    try:
        return smtp.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def _quit(smtp: smtplib.SMTP) -> None:
    with suppress(smtplib.SMTPException, OSError):
        smtp.quit()
    with suppress(OSError):
        smtp.close()
