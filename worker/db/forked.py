"""Schema work in a forked child process, so that Alembic never loads in the caller.

The daemon's main process lives for months; importing Alembic to check or upgrade the schema
once at start would keep ~11 MB resident for nothing. A fork shares everything already loaded,
runs the one step, and reports back through a pipe. Called before any thread starts.
"""

from __future__ import annotations

import os

from worker.errors import DatabaseUnavailable, SchemaBehind

_BEHIND = 2
_UNAVAILABLE = 3


def run(step: str, url: str) -> None:
    """``step`` is "upgrade" or "check"; raise SchemaBehind or RuntimeError as the child did."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        code, message = 0, ""
        try:
            from worker.db import migrate

            if step == "upgrade":
                migrate.upgrade(url)
            else:
                migrate.check_current(url)
        except SchemaBehind as exc:
            code, message = _BEHIND, str(exc)
        except Exception as exc:
            from sqlalchemy.exc import OperationalError

            from worker.logging import redact_text

            code = _UNAVAILABLE if isinstance(exc, OperationalError) else 1
            message = redact_text(f"{type(exc).__name__}: {exc}")
            code, message = 1, f"{type(exc).__name__}: {exc}"
        os.write(write_end, message.encode())
        os._exit(code)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    message = b"".join(chunks).decode(errors="replace")
    if code == _BEHIND:
        raise SchemaBehind(message)
    if code == _UNAVAILABLE:
        raise DatabaseUnavailable(f"cannot reach the database: {message}")
    if code != 0:
        raise RuntimeError(f"database {step} failed: {message}")
