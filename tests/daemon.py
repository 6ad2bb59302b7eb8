"""Running the real daemon (`taskmaster-worker run`) as a child process in tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent


def children_of(pid: int) -> list[int]:
    """The direct children of process ``pid``, read from /proc (Linux)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # The parent pid is the second field after the command name, which may hold spaces.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def worker_children_of(pid: int) -> list[int]:
    """The Dramatiq worker processes among the children of daemon ``pid`` (not its lanes')."""
    out = []
    for child in children_of(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker.process" in argv and b"--lanes" not in argv:
            out.append(child)
    return out


def daemon_env(data_dir: Path, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(REPO),
        "TASKMASTER_DATA_DIR": str(data_dir),
        "TASKMASTER_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "TASKMASTER_LOG_FORMAT": "json",
        "TASKMASTER_SCHEDULES_FILE": str(data_dir.parent / "schedules.yaml"),
        "TASKMASTER_PROCESSES": "1",
        "TASKMASTER_THREADS": "4",
    }
    if redis_url is not None:
        env["TASKMASTER_REDIS_URL"] = redis_url
    if "TEST_DATABASE_URL" in os.environ:
        env["TEST_DATABASE_URL"] = os.environ["TEST_DATABASE_URL"]
    env.update(extra)
    return env


class Daemon:
    """`taskmaster-worker run` in its own process group, so a test can kill the whole tree."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.env = env
        self.cwd = cwd
        self.args = args
        self.log = cwd / f"daemon-{time.monotonic_ns()}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return "http://" + self.env["TASKMASTER_HTTP_ADDR"]

    def start(self, wait_ready: bool = True, timeout_s: float = 30) -> Daemon:
        self.cwd.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker.cli.main", "run", *self.args],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait_ready:
            self.wait_ready(timeout_s)
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http + path, timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.output()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready within {timeout_s}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill_tree(self) -> None:
        """SIGKILL the daemon and every process of its group at once."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, wait; return the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"daemon did not stop within {timeout_s}s:\n{self.output()}") from None
        finally:
            # Whatever the test did, leave no worker process behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
