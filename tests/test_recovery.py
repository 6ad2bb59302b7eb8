"""Work held by a dead worker comes back promptly; a worker over its memory ceiling is replaced."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.daemon import Daemon, children_of, daemon_env, worker_children_of
from tests.helpers import events, wait_for
from tests.redis_server import RedisServer
from worker.daemon import EXIT_RECYCLE, WorkerProcesses
from worker.middleware.maintenance import Maintenance


@pytest.mark.slow
def test_work_held_by_a_killed_worker_is_done_within_60s(own_redis: RedisServer, tmp_path: Path) -> None:
    """SIGKILL a worker process mid-job: its jobs are back in the queue and done within 60 s (defaults)."""
    data_dir = tmp_path / "var"
    env = daemon_env(data_dir, own_redis.url, TASKMASTER_JOB_MODULES="jobs.email,tests.slowjobs")
    daemon = Daemon(env, tmp_path).start()
    try:
        client = redis.Redis.from_url(own_redis.url)
        for key in ("a", "b"):
            client.xadd("taskmaster:intake", {"job": json.dumps({"type": "test.slow", "data": {"key": key}})})
        marks = data_dir / "marks"
        wait_for(lambda: len(list(marks.glob("started-*"))) == 2, timeout_s=20, what="both jobs to start")
        assert daemon.process is not None
        (worker_pid,) = worker_children_of(daemon.process.pid)
        os.kill(worker_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        (marks / "release").touch()
        wait_for(
            lambda: (marks / "done-a").exists() and (marks / "done-b").exists(),
            timeout_s=60,
            interval_s=0.2,
            what="the killed worker's jobs to be done by another",
        )
        assert time.monotonic() - killed_at < 60
        assert len(list(marks.glob("started-*"))) == 4  # each ran again exactly once
    finally:
        assert daemon.stop() == 0


def test_memory_ceiling_asks_for_a_fresh_process(redis_url: str) -> None:
    """A worker whose RSS passes the ceiling calls for recycling, once."""
    from dramatiq.brokers.redis import RedisBroker

    calls: list[int] = []
    broker = RedisBroker(url=redis_url, namespace="t")
    maintenance = Maintenance(
        queues=["default"], interval_s=0.01, memory_limit_mb=1, on_memory_limit=lambda: calls.append(1)
    )
    maintenance.after_worker_boot(broker, None)
    try:
        wait_for(lambda: calls, timeout_s=5, what="the ceiling to be noticed")
        time.sleep(0.1)
    finally:
        maintenance.before_worker_shutdown(broker, None)
    assert calls == [1]


def test_a_recycled_worker_process_is_replaced(tmp_path: Path) -> None:
    """The supervisor starts a new worker process when one exits asking to be recycled."""

    class Fake(WorkerProcesses):
        spawned = 0

        def _spawn(self, index):  # type: ignore[no-untyped-def]
            import subprocess

            Fake.spawned += 1
            code = EXIT_RECYCLE if Fake.spawned == 1 else 0
            if Fake.spawned > 1:
                return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
            return subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])

    workers = Fake(count=1, threads=1, env=dict(os.environ))
    workers.start()
    workers.children[0].wait()
    workers.check()
    assert Fake.spawned == 2 and workers.alive() == 1
    workers.stop(timeout_s=5)
    assert workers.alive() == 0


def lane_children_of(pid: int) -> list[int]:
    return [p for p in children_of(pid) if p not in worker_children_of(pid)]


def test_a_killed_lanes_process_is_replaced_and_notifications_go_on(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """The daemon runs notification.send decisions in a process of lanes alone; SIGKILLed, it is
    replaced, and what the host submits next is decided."""
    data_dir = tmp_path / "var"
    env = daemon_env(data_dir, own_redis.url)
    daemon = Daemon(env, tmp_path).start()
    client = redis.Redis.from_url(own_redis.url)
    try:
        assert daemon.process is not None
        user = {"user_id": "u1", "email": "ada@example.com", "name": "Ada"}
        client.xadd("taskmaster:intake", {"job": json.dumps({"type": "user.upsert", "data": user})})

        def submit(id: str) -> None:
            data = {"user_id": "u1", "category": "task.due", "title": id}
            job = {"type": "notification.send", "id": id, "data": data}
            client.xadd("taskmaster:intake", {"job": json.dumps(job)})

        def decided(id: str) -> bool:
            return any(
                e["type"] == "notification.deferred" and e["data"].get("id") == id for e in events(client)
            )

        submit("n1")
        wait_for(lambda: decided("n1"), timeout_s=30, what="n1 decided")
        (lanes,) = lane_children_of(daemon.process.pid)
        os.kill(lanes, signal.SIGKILL)
        wait_for(
            lambda: lane_children_of(daemon.process.pid) not in ([], [lanes]), timeout_s=20, what="a new one"
        )
        submit("n2")
        wait_for(lambda: decided("n2"), timeout_s=30, what="n2 decided by the new lanes process")
    finally:
        assert daemon.stop() == 0
