"""The daemon end to end: a real `taskmaster-worker run`, a real Redis, jobs added by plain XADD.

The submitting side uses nothing of the project: redis-py and JSON, as any host would.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.daemon import Daemon, daemon_env
from tests.helpers import read_stream, wait_for
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow


def email_job(n: int, **extra: object) -> str:
    return json.dumps(
        {
            "type": "email.send",
            "data": {"to": f"user{n}@example.com", "subject": f"Hi {n}", "text": "Hello"},
            **extra,
        }
    )


def outbox(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "outbox").glob("*.eml"))


def test_contract_from_outside(own_redis: RedisServer, tmp_path: Path) -> None:
    """Good jobs are done and every bad one is rejected with an error, over plain XADD."""
    client = redis.Redis.from_url(own_redis.url)
    bad = [b"not json", b"\xc3\x28", b'"a string"', b'{"type": "nope", "data": {}}',
           b'{"type": "email.send", "data": {"to": "x"}}']  # fmt: skip
    for n, raw in enumerate(bad):
        client.xadd("taskmaster:intake", {"job": email_job(n)})
        client.xadd("taskmaster:intake", {"job": raw})
    data_dir = tmp_path / "var"
    daemon = Daemon(daemon_env(data_dir, own_redis.url), tmp_path).start()
    try:
        client.xadd("taskmaster:intake", {"job": email_job(99, id="late-one")})
        wait_for(lambda: len(outbox(data_dir)) == len(bad) + 1, timeout_s=20, what="all good emails")
        rejected = read_stream(client, "taskmaster:intake:rejected")
        assert len(rejected) == len(bad)
        assert all(fields["error"] and fields["entry"] for _, fields in rejected)
        # A job is counted once its handler returned, just after its file appeared.
        processed = 'taskmaster_jobs_processed_total{type="email.send"} 6.0'
        wait_for(lambda: processed in daemon.get("/metrics")[1], what="the processed count")
        status, body = daemon.get("/metrics")
        assert status == 200
        assert 'taskmaster_jobs_accepted_total{type="email.send"} 6.0' in body
        assert 'taskmaster_jobs_rejected_total{reason="not_json"} 1.0' in body
        assert 'taskmaster_jobs_processed_total{type="email.send"} 6.0' in body
        assert 'taskmaster_queue_depth{queue="default",state="ready"} 0.0' in body
        assert 'taskmaster_lane_entries{lane="notification.send",state="waiting"} 0.0' in body
        assert "taskmaster_job_start_latency_seconds_bucket" in body
    finally:
        assert daemon.stop() == 0


def test_sigkill_in_the_middle_of_1000_jobs_then_restart_does_each_once(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """A daemon killed with SIGKILL mid-stream loses nothing and duplicates nothing after a restart."""
    client = redis.Redis.from_url(own_redis.url)
    data_dir = tmp_path / "var"
    env = daemon_env(
        data_dir,
        own_redis.url,
        TASKMASTER_INTAKE_CLAIM_IDLE="2s",
        TASKMASTER_WORKER_HEARTBEAT_TIMEOUT="4s",
        TASKMASTER_MAINTENANCE_INTERVAL="1s",
        TASKMASTER_PROCESSES="2",
    )
    daemon = Daemon(env, tmp_path).start()
    pipe = client.pipeline(transaction=False)
    for n in range(1000):
        pipe.xadd("taskmaster:intake", {"job": email_job(n, id=f"job-{n}")})
    pipe.execute()
    wait_for(lambda: len(outbox(data_dir)) >= 100, timeout_s=30, what="some jobs done")
    daemon.kill_tree()
    done_at_kill = len(outbox(data_dir))
    assert done_at_kill < 1000, "the kill came too late to prove anything"

    restarted = Daemon(env, tmp_path).start()
    try:
        wait_for(lambda: len(outbox(data_dir)) >= 1000, timeout_s=90, what="all 1000 jobs done")
        # Nothing more arrives: no job runs twice.
        wait_for(lambda: client.llen("taskmaster:dq:default") == 0, timeout_s=30)
        time.sleep(1)
        files = outbox(data_dir)
        assert len(files) == 1000
        subjects = {line for f in files for line in f.read_text().splitlines() if line.startswith("Subject:")}
        assert len(subjects) == 1000
        sent = [json.loads(f["event"]) for _, f in read_stream(client, "taskmaster:events")]
        ids = [e["data"]["id"] for e in sent if e["type"] == "email.sent"]
        assert len(ids) == len(set(ids))
    finally:
        assert restarted.stop() == 0


def test_redis_stopped_and_restarted_under_a_running_daemon(own_redis: RedisServer, tmp_path: Path) -> None:
    """The daemon waits out a Redis outage, says so on /readyz, and carries on without a restart."""
    data_dir = tmp_path / "var"
    daemon = Daemon(daemon_env(data_dir, own_redis.url), tmp_path).start()
    try:
        client = redis.Redis.from_url(own_redis.url)
        client.xadd("taskmaster:intake", {"job": email_job(1)})
        wait_for(lambda: len(outbox(data_dir)) == 1, timeout_s=10)
        own_redis.stop()
        wait_for(lambda: daemon.get("/readyz")[0] == 503, timeout_s=10, what="/readyz to say not ready")
        own_redis.start()
        client = redis.Redis.from_url(own_redis.url)
        client.xadd("taskmaster:intake", {"job": email_job(2)})
        wait_for(lambda: len(outbox(data_dir)) == 2, timeout_s=30, what="the job after the outage")
        wait_for(lambda: daemon.get("/readyz")[0] == 200, timeout_s=10)
        assert daemon.process is not None and daemon.process.poll() is None
    finally:
        assert daemon.stop() == 0


def test_embedded_defaults_run_and_enqueue(tmp_path: Path) -> None:
    """`run` in an empty directory, `enqueue` in another shell: the .eml arrives in the outbox.

    How fast (the issue asks for 2 s) is measured by benchmarks/e2e_outbox.py, not asserted here.
    """
    import subprocess
    import sys
    import tempfile

    # A short directory: the embedded Redis listens on a Unix socket inside it.
    workdir = Path(tempfile.mkdtemp(prefix="tmw-", dir="/tmp"))
    env = daemon_env(workdir / "var", None)
    del env["TASKMASTER_DATA_DIR"]
    daemon = Daemon(env, workdir).start()
    try:
        subprocess.run(
            [sys.executable, "-m", "worker.cli.main", "enqueue", "email.send",
             '{"to": "a@example.com", "subject": "Hi", "text": "Hello"}'],
            env=env, cwd=workdir, check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        (path,) = wait_for(
            lambda: outbox(workdir / "var"), timeout_s=10, interval_s=0.005, what="the outbox file"
        )
        assert "Subject: Hi" in path.read_text()
    finally:
        assert daemon.stop() == 0
    assert not (workdir / "var" / "redis" / "redis.sock").exists(), "the embedded Redis was left running"


def test_jobs_enqueued_before_the_first_daemon_ran_are_done(tmp_path: Path) -> None:
    """With the embedded defaults, `enqueue` works before any daemon ran; the first daemon does it."""
    import subprocess
    import sys
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="tmw-", dir="/tmp"))
    env = daemon_env(workdir / "var", None)
    subprocess.run(
        [sys.executable, "-m", "worker.cli.main", "enqueue", "email.send",
         '{"to": "b@example.com", "subject": "Early", "text": "Hello"}'],
        env=env, cwd=workdir, check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    daemon = Daemon(env, workdir).start()
    try:
        (path,) = wait_for(lambda: outbox(workdir / "var"), timeout_s=10, what="the outbox file")
        assert "Subject: Early" in path.read_text()
    finally:
        assert daemon.stop() == 0


def test_sigterm_drains_and_exits_zero(own_redis: RedisServer, tmp_path: Path) -> None:
    """SIGTERM stops taking work, lets in-flight work finish or return, and exits 0 in time."""
    data_dir = tmp_path / "var"
    daemon = Daemon(daemon_env(data_dir, own_redis.url, TASKMASTER_SHUTDOWN_TIMEOUT="10s"), tmp_path).start()
    client = redis.Redis.from_url(own_redis.url)
    pipe = client.pipeline(transaction=False)
    for n in range(200):
        pipe.xadd("taskmaster:intake", {"job": email_job(n)})
    pipe.execute()
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.stop(timeout_s=30) == 0
    assert time.monotonic() - started < 15
    # Nothing is left held by the stopped workers: every job is done, queued again, or unread.
    held = [key for key in client.scan_iter("taskmaster:dq:__acks__.*") if client.scard(key)]
    assert held == []
    assert client.xpending("taskmaster:intake", "taskmaster-worker")["pending"] == 0
    restarted = Daemon(daemon_env(data_dir, own_redis.url), tmp_path).start()
    try:
        wait_for(lambda: len(outbox(data_dir)) == 200, timeout_s=30, what="every job after the restart")
    finally:
        assert restarted.stop() == 0


def test_invalid_schedule_edit_and_sighup_keep_the_old_schedule(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """An invalid edit followed by SIGHUP is refused, reported by `status`, and the old entry keeps firing."""
    import subprocess
    import sys

    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(
        "timezone: UTC\nschedules:\n  ping:\n    job: email.send\n    every: 1s\n"
        "    data: {to: ops@example.com, subject: ping, text: ping}\n    overlap: allow\n"
    )
    data_dir = tmp_path / "var"
    env = daemon_env(data_dir, own_redis.url)
    daemon = Daemon(env, tmp_path).start()
    try:
        wait_for(lambda: len(outbox(data_dir)) >= 2, timeout_s=15, what="the entry to fire")
        schedules.write_text("timezone: UTC\nschedules:\n  ping:\n    job: no.such.job\n    every: 1s\n")
        daemon.signal(signal.SIGHUP)

        def status_output() -> str:
            result = subprocess.run(
                [sys.executable, "-m", "worker.cli.main", "status"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=30,
            )
            return result.stdout if "no.such.job" in result.stdout else ""

        result = wait_for(
            status_output, timeout_s=15, interval_s=0.3, what="status to show the refused reload"
        )
        assert "reload_error" in result
        fired = len(outbox(data_dir))
        wait_for(
            lambda: len(outbox(data_dir)) >= fired + 2, timeout_s=15, what="the old entry to keep firing"
        )
        assert "schedule.reload_refused" in daemon.output() or "no.such.job" in daemon.output()
    finally:
        assert daemon.stop() == 0


def test_embedded_redis_of_a_killed_daemon_is_adopted(tmp_path: Path) -> None:
    """A daemon killed with SIGKILL leaves its embedded Redis; the next one adopts and stops it."""
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="tmw-", dir="/tmp"))
    env = daemon_env(workdir / "var", None)
    first = Daemon(env, workdir).start()
    first.kill_tree()
    socket_path = workdir / "var" / "redis" / "redis.sock"
    assert redis.Redis(unix_socket_path=str(socket_path)).ping()  # still running, nothing lost
    second = Daemon(env, workdir).start()
    assert second.stop() == 0
    assert not socket_path.exists(), "the adopted embedded Redis was left running"


def test_systemd_notifications(own_redis: RedisServer, tmp_path: Path) -> None:
    """Under systemd the daemon sends READY=1 once serving, WATCHDOG=1 pings and STOPPING=1."""
    import socket as socketlib

    listener = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    listener.bind(str(path))
    listener.settimeout(15)
    env = daemon_env(tmp_path / "var", own_redis.url, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="400000")
    daemon = Daemon(env, tmp_path).start(wait_ready=False)
    try:
        received: list[str] = []
        while "WATCHDOG=1" not in received:
            received.extend(listener.recv(4096).decode().split("\n"))
        assert received.index("READY=1") < received.index("WATCHDOG=1")
        assert daemon.get("/readyz")[0] == 200
        daemon.signal(signal.SIGTERM)
        while "STOPPING=1" not in received:
            received.extend(listener.recv(4096).decode().split("\n"))
    finally:
        assert daemon.stop() == 0
        listener.close()


def test_a_database_behind_its_schema_is_refused_until_upgraded(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """On a configured database with an old schema, `run` exits 2 naming `db upgrade`; after it, it runs."""
    import subprocess
    import sys

    env = daemon_env(
        tmp_path / "var", own_redis.url, TASKMASTER_DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}"
    )
    refused = Daemon(env, tmp_path).start(wait_ready=False)
    assert refused.process is not None
    assert refused.process.wait(timeout=60) == 2
    assert "taskmaster-worker db upgrade" in refused.output()
    subprocess.run(
        [sys.executable, "-m", "worker.cli.main", "db", "upgrade"],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    daemon = Daemon(env, tmp_path).start()
    assert daemon.stop() == 0


def test_roles_run_apart_on_one_redis(own_redis: RedisServer, tmp_path: Path) -> None:
    """`--role intake`, `worker` and `scheduler` as three daemons do together what `all` does."""
    import subprocess
    import sys

    (tmp_path / "schedules.yaml").write_text(
        "timezone: UTC\nschedules:\n  tick:\n    job: email.send\n    every: 1s\n"
        "    data: {to: ops@example.com, subject: tick, text: tick}\n"
    )
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    data_dir = tmp_path / "var"
    base = daemon_env(data_dir, own_redis.url, TASKMASTER_DATABASE_URL=database)
    subprocess.run(
        [sys.executable, "-m", "worker.cli.main", "db", "upgrade"], env=base, cwd=tmp_path, check=True
    )
    daemons = [
        Daemon(
            daemon_env(data_dir, own_redis.url, TASKMASTER_DATABASE_URL=database), tmp_path, "--role", role
        )
        for role in ("intake", "worker", "scheduler")
    ]
    for daemon in daemons:
        daemon.start()
    try:
        client = redis.Redis.from_url(own_redis.url)
        client.xadd("taskmaster:intake", {"job": email_job(7)})
        wait_for(
            lambda: any("Subject: Hi 7" in f.read_text() for f in outbox(data_dir)),
            timeout_s=15,
            what="the job",
        )
        wait_for(
            lambda: sum("Subject: tick" in f.read_text() for f in outbox(data_dir)) >= 2,
            timeout_s=15,
            what="scheduled fires",
        )
    finally:
        for daemon in daemons:
            assert daemon.stop() == 0
