"""Notifications through the running daemon on its default settings: sustained rate, decision
latency, and urgent notifications at the channel.

The script starts a Redis server of its own and `taskmaster-worker run` on its defaults (2
worker processes of 16 threads and a process of lanes; any TASKMASTER_* setting of this run's
environment, such as TASKMASTER_RATE_GLOBAL_PER_SECOND, is passed on; log level warning as in
e2e_outbox.py), creates ``--users`` users by
`user.upsert` through the intake stream and waits until they are in the daemon's SQLite
database. A separate process then XADDs `notification.send` jobs at ``--rate`` per second for
``--seconds`` (priorities 30% low / 55% normal / 12% high / 3% urgent, the mix of the issue's
trace; users with default preferences: every channel on, 5-minute digest window). Printed:

  1. sustained rate: notifications whose first decision event (`notification.delivered`,
     `.deferred`, `.suppressed`, read live from the events stream) came within the submission
     window, per second of it; the received counter of /metrics; whether the backlog drained
     (goal: 1,000/s sustained);
  2. decision latency p50/p99 estimated from the buckets of
     `taskmaster_notification_decision_seconds` (goal: p99 < 5 ms including Redis), over the
     whole run and again without its first quarter (while the profile caches fill), and the
     submission-to-start histogram `taskmaster_job_start_latency_seconds` per queue;
  3. urgent notifications at the channel: from the intake entry's id (ms) to the
     `notification.delivered` event of the email channel, and to the mtime of the .eml file in
     the outbox (the default provider) (goal: p99 < 1 s).

Usage: python benchmarks/notifications_daemon.py [--rate 1000] [--seconds 20] [--users 1000]
Only loopback is used: the Redis server on a free port, the daemon's HTTP on another.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import redis
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemon import Daemon, daemon_env  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

INTAKE = "taskmaster:intake"
EVENTS = "taskmaster:events"
PRIORITIES = (("low", 0.30), ("normal", 0.55), ("high", 0.12), ("urgent", 0.03))
CATEGORIES = ("task.due", "task.assigned", "comment.mention", "project.update")
Buckets = dict[str, list[tuple[float, float]]]  # label -> [(upper bound, cumulative count)]


def create_users(client: redis.Redis, db_path: Path, users: int, timeout_s: float = 120) -> float:
    started = time.monotonic()
    pipe = client.pipeline(transaction=False)
    for n in range(users):
        data = {"user_id": f"u{n}", "email": f"u{n}@example.com", "name": f"User {n}"}
        pipe.xadd(INTAKE, {"job": json.dumps({"type": "user.upsert", "id": f"user-{n}", "data": data})})
        if n % 200 == 199:
            pipe.execute()
    pipe.execute()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(db_path, timeout=5) as db:
                if db.execute("select count(*) from users").fetchone()[0] >= users:
                    return time.monotonic() - started
        except sqlite3.OperationalError:
            pass  # the schema may not be there yet, or a writer holds the lock
        time.sleep(0.1)
    raise SystemExit(f"users not all in {db_path} after {timeout_s}s")


def submit(url: str, rate: float, seconds: float, users: int, out: str) -> None:
    """In its own process: XADD notifications on a fixed schedule; write (id, entry ms, priority)."""
    rng = random.Random(20261126)
    client = redis.Redis.from_url(url)
    names = [p for p, _ in PRIORITIES]
    weights = [w for _, w in PRIORITIES]
    total = int(rate * seconds)
    sent: list[tuple[str, int, str]] = []
    started = time.monotonic()
    n = 0
    while n < total:
        # Catch up to the schedule in one pipeline, so a slow tick does not lower the rate.
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        pipe = client.pipeline(transaction=False)
        batch = []
        while n < due:
            priority = rng.choices(names, weights)[0]
            nid = f"n-{n}"
            data = {
                "user_id": f"u{rng.randrange(users)}",
                "category": rng.choice(CATEGORIES),
                "title": f"{priority} {nid}",
                "body": "Benchmark notification body.",
                "priority": priority,
            }
            pipe.xadd(INTAKE, {"job": json.dumps({"type": "notification.send", "id": nid, "data": data})})
            batch.append((nid, priority))
            n += 1
        for (nid, priority), entry in zip(batch, pipe.execute(), strict=True):
            sent.append((nid, int(entry.decode().split("-")[0]), priority))
        next_at = started + n / rate
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - started
    Path(out).write_text(json.dumps({"elapsed_s": elapsed, "sent": sent}))


class EventReader(threading.Thread):
    """Reads the events stream live (it is trimmed), keeping the first decision per notification."""

    def __init__(self, url: str, start_id: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.last = start_id
        self.first_ms: dict[str, float] = {}
        self.email_delivered_ms: dict[str, float] = {}
        self.outcomes: Counter[tuple[str, str, str]] = Counter()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            answer: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = (
                self.client.xread({EVENTS: self.last}, count=2000, block=200) or []  # type: ignore[assignment]
            )
            for _, entries in answer:
                for entry_id, fields in entries:
                    self.last = entry_id.decode()
                    self._take(json.loads(fields[b"event"]))

    def _take(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if not kind.startswith("notification."):
            return
        data = event["data"]
        at_ms = datetime.fromisoformat(event["at"]).timestamp() * 1000
        self.outcomes[(kind.split(".", 1)[1], data.get("channel") or "-", data.get("reason") or "-")] += 1
        for nid in data.get("notification_ids") or ():
            self.first_ms.setdefault(nid, at_ms)
            if kind == "notification.delivered" and data.get("channel") == "email":
                self.email_delivered_ms.setdefault(nid, at_ms)


class Scrape(NamedTuple):
    histograms: dict[str, Buckets]
    counters: dict[str, float]


def scrape(daemon: Daemon) -> Scrape:
    """Histogram buckets (by label set) and counter totals from /metrics."""
    status, text = daemon.get("/metrics")
    if status != 200:
        raise SystemExit(f"/metrics answered {status}")
    out = Scrape({}, {})
    for family in text_string_to_metric_families(text):
        if family.type == "histogram":
            buckets: Buckets = {}
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "le")
                    buckets.setdefault(labels, []).append((float(sample.labels["le"]), sample.value))
            out.histograms[family.name] = buckets
        elif family.type == "counter":
            out.counters[family.name] = sum(s.value for s in family.samples if s.name.endswith("_total"))
    return out


def bucket_delta(after: Buckets, before: Buckets, label: str) -> list[tuple[float, float]]:
    prior = dict(before.get(label, []))
    return sorted((le, count - prior.get(le, 0.0)) for le, count in after.get(label, []))


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Like PromQL's histogram_quantile: linear within the bucket the rank falls in."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, cumulative
    return lower


def spread(values: list[float]) -> str:
    return (
        f"p50 {pct(values, 0.5):.0f} ms, p99 {pct(values, 0.99):.0f} ms, max {max(values, default=0):.0f} ms"
    )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def eml_times(outbox: Path) -> dict[str, float]:
    """Subject (our title) -> mtime in ms of each .eml (written to .tmp, then renamed)."""
    found: dict[str, float] = {}
    for entry in os.scandir(outbox):
        if not entry.name.endswith(".eml"):
            continue
        with open(entry.path, "rb") as handle:
            for line in handle:
                if line.startswith(b"Subject: "):
                    found[line[9:].decode().strip()] = entry.stat().st_mtime_ns / 1e6
                    break
                if not line.strip():
                    break
    return found


def tree_cpu_s(pid: int) -> float:
    """User+system CPU seconds of ``pid`` and its living children (workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="notifications per second to submit")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to submit")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tmw-notif-"))
    server = RedisServer(work / "redis")
    server.start()
    data_dir = work / "daemon"
    env = daemon_env(data_dir, server.url)
    for name in ("TASKMASTER_PROCESSES", "TASKMASTER_THREADS"):
        del env[name]  # the defaults (2 processes of 16 threads) unless this run's environment sets them
    own = {"TASKMASTER_DATA_DIR", "TASKMASTER_REDIS_URL", "TASKMASTER_HTTP_ADDR", "TASKMASTER_SCHEDULES_FILE"}
    for name, value in os.environ.items():  # e.g. TASKMASTER_RATE_GLOBAL_PER_SECOND
        if name.startswith("TASKMASTER_") and name not in own:
            env[name] = value
    env["TASKMASTER_LOG_LEVEL"] = "warning"
    daemon = Daemon(env, work)
    try:
        daemon.start()
        client = redis.Redis.from_url(server.url)
        users_s = create_users(client, data_dir / "taskmaster.db", args.users)
        print(f"{args.users} users created through user.upsert in {users_s:.1f} s")
        last: list[tuple[bytes, dict[bytes, bytes]]] = client.xrevrange(EVENTS, count=1)  # type: ignore[assignment]
        reader = EventReader(server.url, last[0][0].decode() if last else "0-0")
        reader.start()
        before = scrape(daemon)
        assert daemon.process is not None
        cpu_before = tree_cpu_s(daemon.process.pid)
        out = work / "sent.json"
        child = multiprocessing.get_context("spawn").Process(
            target=submit, args=(server.url, args.rate, args.seconds, args.users, str(out))
        )
        wall_start = time.time() * 1000
        child.start()
        # A second view of the decision latency leaves out the first quarter of the run, while
        # every process's profile cache fills (a user's first notification reads SQL).
        child.join(args.seconds / 4)
        warm = scrape(daemon)
        child.join()
        submitted_all = scrape(daemon)
        submitted = json.loads(out.read_text())
        sent = [(nid, ms, p) for nid, ms, p in submitted["sent"]]
        first_ms, end_ms = sent[0][1], sent[-1][1]
        deadline = time.monotonic() + args.drain_timeout
        while len(reader.first_ms) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        drained_ms = max(reader.first_ms.values(), default=wall_start)
        urgent = {nid: ms for nid, ms, p in sent if p == "urgent"}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(n in reader.email_delivered_ms for n in urgent):
            time.sleep(0.05)
        time.sleep(1)  # let the last email.send jobs write their files
        cpu_used = tree_cpu_s(daemon.process.pid) - cpu_before
        after = scrape(daemon)
        reader.stopping.set()
        reader.join()
        emls = eml_times(data_dir / "outbox")
    finally:
        daemon.stop()
        server.stop()
    report(
        args,
        submitted["elapsed_s"],
        sent,
        reader,
        before,
        after,
        (warm, submitted_all),
        emls,
        first_ms,
        end_ms,
        drained_ms,
        cpu_used,
    )
    shutil.rmtree(work, ignore_errors=True)


def report(
    args: argparse.Namespace,
    submit_s: float,
    sent: list[tuple[str, int, str]],
    reader: EventReader,
    before: Scrape,
    after: Scrape,
    steady: tuple[Scrape, Scrape],
    emls: dict[str, float],
    first_ms: int,
    end_ms: int,
    drained_ms: float,
    cpu_used_s: float,
) -> None:
    window_s = (end_ms - first_ms) / 1000
    decided = reader.first_ms
    in_window = sum(1 for nid, _, _ in sent if decided.get(nid, float("inf")) <= end_ms)
    mix = Counter(p for _, _, p in sent)
    print(
        f"submitted {len(sent)} notification.send in {submit_s:.1f} s = {len(sent) / submit_s:.0f}/s "
        f"(target {args.rate:.0f}/s; {', '.join(f'{p} {mix[p]}' for p, _ in PRIORITIES)})"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} cores, load average at the end {load} (other work on the machine counts)"
    )
    print("1. sustained rate")
    print(
        f"   decided within the submission window: {in_window} / {len(sent)} "
        f"= {in_window / window_s:.0f}/s  (goal >= 1000/s)"
    )
    name = "taskmaster_notifications_received"
    received = after.counters.get(name, 0.0) - before.counters.get(name, 0.0)
    span_s = (drained_ms - first_ms) / 1000
    drained = len(decided) >= len(sent)
    print(
        f"   all decided: {len(decided)} / {len(sent)} (received counter of /metrics: {received:.0f}); "
        f"last decision {max(0.0, (drained_ms - end_ms) / 1000):.2f} s after the last submission, "
        f"overall {len(decided) / span_s:.0f}/s; backlog {'drained' if drained else 'NOT drained'}"
    )
    print(f"   daemon CPU: {cpu_used_s:.1f} s over {span_s:.1f} s = {cpu_used_s / span_s:.2f} cores")
    lat = [decided[nid] - ms for nid, ms, _ in sent if nid in decided]
    print(f"   submission to first decision event: p50 {pct(lat, 0.5):.1f} ms, p99 {pct(lat, 0.99):.1f} ms")
    outcomes = ", ".join(f"{k[0]}/{k[1]}/{k[2]} {v}" for k, v in sorted(reader.outcomes.items()))
    print(f"   events (outcome/channel/reason): {outcomes}")
    print("2. latency histograms of /metrics (estimated within buckets)")
    name = "taskmaster_notification_decision_seconds"
    dec = bucket_delta(after.histograms[name], before.histograms[name], "")
    print(
        f"   decision: n={dec[-1][1] if dec else 0:.0f} p50 {quantile(dec, 0.5) * 1000:.2f} ms, "
        f"p99 {quantile(dec, 0.99) * 1000:.2f} ms  (goal p99 < 5 ms)"
    )
    print("     buckets (le ms: count): " + ", ".join(f"{le * 1000:g}: {c:.0f}" for le, c in dec))
    warm = bucket_delta(steady[1].histograms[name], steady[0].histograms[name], "")
    print(
        f"   decision after the first {args.seconds / 4:g} s, to the last submission: "
        f"n={warm[-1][1] if warm else 0:.0f} p50 {quantile(warm, 0.5) * 1000:.2f} ms, "
        f"p99 {quantile(warm, 0.99) * 1000:.2f} ms"
    )
    name = "taskmaster_job_start_latency_seconds"
    for label in sorted(after.histograms[name]):
        start = bucket_delta(after.histograms[name], before.histograms[name], label)
        if not start or start[-1][1] == 0:
            continue
        print(
            f"   job start latency {label}: n={start[-1][1]:.0f} p50 {quantile(start, 0.5) * 1000:.1f} ms, "
            f"p99 {quantile(start, 0.99) * 1000:.1f} ms"
        )
    print("3. urgent notifications at the channel (email, outbox provider)")
    urgent = [(nid, ms) for nid, ms, p in sent if p == "urgent"]
    to_event = [reader.email_delivered_ms[nid] - ms for nid, ms in urgent if nid in reader.email_delivered_ms]
    to_file = [emls[f"urgent {nid}"] - ms for nid, ms in urgent if f"urgent {nid}" in emls]
    print(
        f"   to notification.delivered (email): {len(to_event)}/{len(urgent)} "
        f"{spread(to_event)}"
        "  (goal p99 < 1000 ms)"
    )
    print(
        f"   to the .eml file in the outbox:    {len(to_file)}/{len(urgent)} "
        f"{spread(to_file)}"
        "  (goal p99 < 1000 ms)"
    )


if __name__ == "__main__":
    main()
