"""End-to-end throughput, latency, start-up and memory of the daemon on its default settings.

Prints, from one run on one machine:
  1. throughput: email.send jobs added by XADD until their .eml files are in the outbox, against
     a bare Dramatiq actor writing the same file, fed by actor.send, with the same processes and
     threads; both rates and the ratio (goal: ratio >= 0.5);
  2. submission-to-done latency p50/p99 at half the measured throughput (goal: p99 < 50 ms for
     submission-to-start; done includes building and writing the email, so it is an upper bound);
  3. start-up to ready on the embedded defaults (goal: < 2 s), idle memory per process (< 100 MB).

Usage: python benchmarks/e2e_outbox.py [--jobs 5000] [--processes 2] [--threads 8]
Only loopback is used: a Redis server of its own on a free port, the daemon's HTTP on another.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemon import Daemon, children_of, daemon_env  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

DATA = {"to": "someone@example.com", "subject": "Benchmark", "text": "Hello from the benchmark.\n" * 10}


def count_files(directory: Path) -> int:
    try:
        return sum(1 for name in os.listdir(directory) if name.endswith(".eml"))
    except FileNotFoundError:
        return 0


def wait_files(directory: Path, n: int, timeout_s: float = 600) -> float:
    deadline = time.monotonic() + timeout_s
    while count_files(directory) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {count_files(directory)} of {n} files after {timeout_s}s")
        time.sleep(0.005)
    return time.monotonic()


def bare_rate(server: RedisServer, work: Path, jobs: int, processes: int, threads: int) -> float:
    outbox = work / "bare-outbox"
    outbox.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "benchmarks" / "_bare_worker.py"),
                server.url,
                str(outbox),
                str(threads),
            ],
            env=env,
        )
        for _ in range(processes)
    ]
    try:
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=server.url, namespace="bare")
        dramatiq.set_broker(broker)
        actor = dramatiq.actor(lambda key, data: None, actor_name="send_bare", max_retries=0)
        time.sleep(2)  # let the worker processes boot
        started = time.monotonic()
        for n in range(jobs):
            actor.send(f"bare-{n}", DATA)
        done = wait_files(outbox, jobs)
        return jobs / (done - started)
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(timeout=30)


def daemon_rate(
    server: RedisServer, work: Path, jobs: int, processes: int, threads: int
) -> tuple[float, Daemon]:
    data_dir = work / "daemon"
    env = daemon_env(
        data_dir, server.url, TASKMASTER_PROCESSES=str(processes), TASKMASTER_THREADS=str(threads)
    )
    env["TASKMASTER_LOG_LEVEL"] = "warning"
    daemon = Daemon(env, work).start()
    time.sleep(2)  # the same boot allowance as the baseline
    client = redis.Redis.from_url(server.url)
    started = time.monotonic()
    pipe = client.pipeline(transaction=False)
    for n in range(jobs):
        pipe.xadd(
            "taskmaster:intake", {"job": json.dumps({"type": "email.send", "id": f"e2e-{n}", "data": DATA})}
        )
        if n % 100 == 99:
            pipe.execute()
    pipe.execute()
    done = wait_files(data_dir / "outbox", jobs)
    return jobs / (done - started), daemon


def latency(
    server: RedisServer, daemon: Daemon, work: Path, rate: float, seconds: float
) -> tuple[float, float]:
    client = redis.Redis.from_url(server.url)
    client.delete("taskmaster:events")
    outbox = work / "daemon" / "outbox"
    before = count_files(outbox)
    interval = 1.0 / rate
    total = int(rate * seconds)
    next_at = time.monotonic()
    for n in range(total):
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        client.xadd(
            "taskmaster:intake", {"job": json.dumps({"type": "email.send", "id": f"lat-{n}", "data": DATA})}
        )
    wait_files(outbox, before + total)
    latencies = []
    for _, fields in client.xrange("taskmaster:events"):
        event = json.loads(fields[b"event"])
        entry_ms = int(event["data"]["entry"].split("-")[0])
        at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp() * 1000
        latencies.append(at - entry_ms)
    latencies.sort()
    return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1]


def tree_rss_mb(pid: int) -> list[float]:
    pids = [pid, *children_of(pid)]
    sizes = []
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sizes


def startup(work: Path) -> tuple[float, list[float], float]:
    workdir = Path(tempfile.mkdtemp(prefix="tmw-bench-", dir="/tmp"))
    try:
        env = daemon_env(workdir / "var", None)
        # The embedded defaults: no data dir, processes or threads given.
        for name in ("TASKMASTER_DATA_DIR", "TASKMASTER_PROCESSES", "TASKMASTER_THREADS"):
            del env[name]
        # First run creates the SQLite schema; measure the second, as a service restarts.
        Daemon(env, workdir).start().stop()
        started = time.monotonic()
        daemon = Daemon(env, workdir).start()
        ready = time.monotonic() - started
        time.sleep(3)
        assert daemon.process is not None
        rss = tree_rss_mb(daemon.process.pid)
        # The check: `enqueue` in another shell, the .eml in the outbox within 2 s.
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "worker.cli.main", "enqueue", "email.send", json.dumps(DATA)],
            env=env,
            cwd=workdir,
            check=True,
            capture_output=True,
        )
        wait_files(workdir / "var" / "outbox", 1, timeout_s=30)
        enqueue_s = time.monotonic() - started
        daemon.stop()
        return ready, rss, enqueue_s
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--latency-seconds", type=float, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tmw-e2e-"))
    server = RedisServer(work / "redis")
    server.start()
    try:
        bare = bare_rate(server, work, args.jobs, args.processes, args.threads)
        ours, daemon = daemon_rate(server, work, args.jobs, args.processes, args.threads)
        try:
            p50, p99 = latency(server, daemon, work, ours / 2, args.latency_seconds)
        finally:
            daemon.stop()
        ready_s, rss, enqueue_s = startup(work)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"processes={args.processes} threads={args.threads} jobs={args.jobs}")
    print(f"bare dramatiq actor (actor.send):  {bare:8.0f} emails/s")
    print(f"taskmaster-worker (XADD intake):   {ours:8.0f} emails/s")
    print(f"ratio: {ours / bare:.2f}  (goal >= 0.50)")
    print(
        f"submission-to-done at {ours / 2:.0f}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        "  (goal: start p99 < 50 ms)"
    )
    print(f"start-up to ready (embedded defaults): {ready_s:.2f} s  (goal < 2 s)")
    print(f"`enqueue` (CLI) to the .eml in the outbox (embedded defaults): {enqueue_s:.2f} s  (goal < 2 s)")
    print(f"idle RSS per process: {', '.join(f'{m:.0f} MB' for m in rss)}  (goal < 100 MB each)")


if __name__ == "__main__":
    main()
