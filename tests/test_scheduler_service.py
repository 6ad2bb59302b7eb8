"""The running scheduler on a real Redis: leadership, firing, catch-up, overlap, reload, status.

Fires are counted in Redis (the Dramatiq queue and the idempotency keys); no workers run.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY
from pydantic import BaseModel

from tests.helpers import wait_for
from tests.redis_server import RedisServer
from worker.keys import Keys
from worker.registry import JobType, Registry
from worker.runtime import Runtime
from worker.scheduler import firing
from worker.scheduler.service import Scheduler
from worker.scheduler.status import read_status
from worker.scheduler.timing import iso, parse_iso
from worker.settings import load_settings
from worker.submit import enqueue

QUEUE = "default"


class Tick(BaseModel):
    n: int = 0


def _handle(ctx: Any, data: Any) -> None:
    return None


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def every_entry(name: str, every: str = "1s", **extra: str) -> str:
    lines = [f"  {name}:", "    job: test.tick", f"    every: {every}"]
    lines += [f"    {key}: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def document(*entries: str) -> str:
    return "timezone: UTC\nschedules:\n" + "".join(entries)


class Harness:
    """Schedulers on the test Redis sharing one schedules file, stopped at the end."""

    def __init__(self, env: dict[str, str], client: redis.Redis) -> None:
        self.env = env
        self.client = client
        self.path = Path(env["TASKMASTER_SCHEDULES_FILE"])
        self.keys = Keys("taskmaster")
        self.registry = Registry()
        self.registry.add(JobType(name="test.tick", model=Tick, handler=_handle))
        self.schedulers: list[Scheduler] = []
        self.runtimes: list[Runtime] = []

    def write(self, text: str) -> None:
        self.path.write_text(text)

    def scheduler(self, **env: str) -> Scheduler:
        settings = load_settings({**self.env, **env})
        runtime = Runtime(settings, self.registry)
        self.runtimes.append(runtime)
        scheduler = Scheduler(runtime, self.path)
        self.schedulers.append(scheduler)
        return scheduler

    def fire_times(self, entry: str) -> list[datetime]:
        """The scheduled times fired for ``entry``, from their idempotency keys."""
        prefix = self.keys.idempotency(f"fire:{entry}:")
        keys = [k.decode() for k in self.client.scan_iter(match=prefix + "*")]
        return sorted(parse_iso(k[len(prefix) :]) for k in keys)

    def queued(self) -> int:
        return int(self.client.llen(self.keys.queue(QUEUE)))

    def close(self) -> None:
        for scheduler in self.schedulers:
            scheduler.stop()
        for runtime in self.runtimes:
            runtime.close()


@pytest.fixture
def harness(env: dict[str, str], redis_client: redis.Redis) -> Iterator[Harness]:
    h = Harness(env, redis_client)
    yield h
    h.close()


def settled(harness: Harness, name: str) -> datetime:
    value = harness.client.hget(harness.keys.scheduler_state, name)
    assert isinstance(value, bytes)
    return parse_iso(value.decode())


def assert_consecutive(times: list[datetime], step_s: float = 1.0) -> None:
    assert len(set(times)) == len(times)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap == step_s for gap in gaps), gaps


def test_two_schedulers_fire_each_second_exactly_once(harness: Harness) -> None:
    """Two daemons on one Redis: one leads, each second fires once, each fire well under a second late."""
    harness.write(document(every_entry("pair", overlap="allow")))
    lag_count_before = metric("taskmaster_scheduler_fire_lag_seconds_count")
    a, b = harness.scheduler(), harness.scheduler()
    a.start()
    b.start()
    leader = wait_for(lambda: next((s for s in (a, b) if s.is_leader), None), 5, what="a leader")
    assert leader is not None
    since = leader.leading_since
    assert since is not None
    wait_for(lambda: len(harness.fire_times("pair")) >= 5, 10, what="five fires")
    assert [a.is_leader, b.is_leader].count(True) == 1
    a.stop()
    b.stop()
    ended = datetime.now(UTC)

    times = harness.fire_times("pair")
    assert_consecutive(times)
    assert harness.queued() == len(times)  # no fire enqueued twice
    assert metric("taskmaster_scheduler_fires_total", entry="pair") == len(times)
    assert metric("taskmaster_scheduler_fire_lag_seconds_count") - lag_count_before >= len(times)
    elapsed_s = (ended - since).total_seconds()
    assert abs(len(times) - elapsed_s) <= 1.0, (len(times), elapsed_s)
    # The queue holds the fires in order: compare each enqueue time with its scheduled time.
    ids = harness.client.lrange(harness.keys.queue(QUEUE), 0, -1)
    messages = harness.client.hmget(harness.keys.queue_messages(QUEUE), ids)
    stamps = [json.loads(m)["message_timestamp"] / 1000 for m in messages if m is not None]
    lags = [stamp - t.timestamp() for stamp, t in zip(stamps, times, strict=True)]
    assert all(0 <= lag < 0.5 for lag in lags), lags


def test_standby_takes_over_when_the_leader_dies(harness: Harness) -> None:
    """A leader that dies without releasing its lock is replaced within 15 s; the missed run runs once."""
    harness.write(document(every_entry("handover", overlap="allow")))
    changes_before = metric("taskmaster_scheduler_leader_changes_total")
    a, b = harness.scheduler(), harness.scheduler()
    a.start()
    wait_for(lambda: a.is_leader, 5, what="a to lead")
    b.start()
    wait_for(lambda: len(harness.fire_times("handover")) >= 2, 5, what="a's fires")
    a.stop(release=False)  # as if the process died: the lock stays until it expires
    died = time.monotonic()
    wait_for(lambda: b.is_leader, 15, what="b to take over")
    assert time.monotonic() - died < 15
    assert b.leading_since is not None
    took_over = b.leading_since
    wait_for(
        lambda: harness.fire_times("handover")[-1] >= took_over + timedelta(seconds=2), 5, what="b's fires"
    )
    b.stop()

    times = harness.fire_times("handover")
    assert len(set(times)) == len(times)
    gaps = [
        (later, earlier)
        for earlier, later in itertools.pairwise(times)
        if later - earlier > timedelta(seconds=1)
    ]
    assert len(gaps) == 1  # a's last fire, then one catch-up fire for the whole gap
    catch_up, _ = gaps[0]
    assert took_over - timedelta(seconds=1) < catch_up <= took_over
    assert_consecutive([t for t in times if t >= catch_up])
    assert metric("taskmaster_scheduler_leader_changes_total") - changes_before == 2


def test_clean_stop_hands_over_at_once(harness: Harness) -> None:
    """A leader that stops releases the lock and its status; a standby leads within one try interval."""
    harness.write(document(every_entry("clean", overlap="allow")))
    a, b = harness.scheduler(), harness.scheduler()
    a.start()
    wait_for(lambda: a.is_leader, 5, what="a to lead")
    b.start()
    a.stop()
    assert harness.client.hget(harness.keys.scheduler_status, "leader") != a.leader_id.encode()
    wait_for(lambda: b.is_leader, 5, what="b to take over")
    wait_for(lambda: read_status(harness.client, harness.keys).leader == b.leader_id, 5, what="b's status")
    assert read_status(harness.client, harness.keys).live


@pytest.mark.parametrize(("catchup", "count"), [("skip", 0), ("once", 1), ("all", 3)])
def test_catchup_from_redis_state(harness: Harness, catchup: str, count: int) -> None:
    """Fires missed while no scheduler ran are caught up per entry: skip none, once one, all each."""
    name = f"hourly-{catchup}"
    harness.write(document(every_entry(name, "1h", catchup=catchup, misfire_grace="4h", overlap="allow")))
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    harness.client.hset(harness.keys.scheduler_state, name, iso(hour - timedelta(hours=3)))
    missed_before = metric("taskmaster_scheduler_missed_fires_total", entry=name, reason="catchup")
    scheduler = harness.scheduler()
    scheduler.start()
    wait_for(lambda: settled(harness, name) >= hour, 5, what="the catch-up to settle")
    assert scheduler.leading_since is not None
    last = scheduler.leading_since.replace(minute=0, second=0, microsecond=0)
    expected = [last - timedelta(hours=i) for i in reversed(range(count))]
    assert harness.fire_times(name) == expected
    missed = metric("taskmaster_scheduler_missed_fires_total", entry=name, reason="catchup") - missed_before
    assert missed == 3 - count


def test_overlap_skip_waits_for_the_previous_run(harness: Harness) -> None:
    """With overlap skip, fires are skipped while the previous run's marker exists, and resume after."""
    harness.write(document(every_entry("overlap")))
    skipped_before = metric("taskmaster_scheduler_missed_fires_total", entry="overlap", reason="overlap")
    scheduler = harness.scheduler()
    scheduler.start()
    wait_for(lambda: harness.queued() == 1, 5, what="the first fire")
    running = harness.keys.schedule_running("overlap")
    ttl_s = harness.client.pttl(running) / 1000
    assert 600 < ttl_s <= 900  # the job time limit (600 s) plus a margin for queueing
    wait_for(
        lambda: (
            metric("taskmaster_scheduler_missed_fires_total", entry="overlap", reason="overlap")
            - skipped_before
            >= 2
        ),
        5,
        what="two skipped fires",
    )
    assert harness.queued() == 1
    harness.client.delete(running)  # what the worker middleware does when the job ends
    wait_for(lambda: harness.queued() == 2, 5, what="the next fire after the run ended")


def test_overlap_allow_fires_anyway(harness: Harness) -> None:
    """With overlap allow, each fire is enqueued while earlier ones still wait in the queue."""
    harness.write(document(every_entry("allowed", overlap="allow")))
    harness.scheduler().start()
    wait_for(lambda: harness.queued() >= 3, 6, what="three fires")
    assert not harness.client.exists(harness.keys.schedule_running("allowed"))


def test_enqueue_failures_are_retried(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fire Redis refuses is retried with backoff and enqueued once it can be; none is lost."""
    calls = {"n": 0}
    real = enqueue

    def flaky(*args: Any, **kwargs: Any) -> bool:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise redis.ConnectionError("Redis went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(firing, "enqueue", flaky)
    harness.write(document(every_entry("flaky", overlap="allow")))
    retries_before = metric("taskmaster_scheduler_enqueue_retries_total", entry="flaky")
    harness.scheduler().start()
    wait_for(lambda: len(harness.fire_times("flaky")) >= 4, 8, what="fires after the failures")
    assert metric("taskmaster_scheduler_enqueue_retries_total", entry="flaky") - retries_before == 3
    assert_consecutive(harness.fire_times("flaky"))


def test_fire_dropped_after_its_misfire_grace(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fire that cannot be enqueued within its misfire grace is dropped and counted, not run late."""

    def refuse(*args: Any, **kwargs: Any) -> bool:
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(firing, "enqueue", refuse)
    harness.write(document(every_entry("late", misfire_grace="1s", overlap="allow")))
    missed_before = metric("taskmaster_scheduler_missed_fires_total", entry="late", reason="misfire")
    harness.scheduler().start()
    wait_for(
        lambda: (
            metric("taskmaster_scheduler_missed_fires_total", entry="late", reason="misfire") - missed_before
            >= 2
        ),
        6,
        what="dropped fires",
    )
    assert metric("taskmaster_scheduler_enqueue_retries_total", entry="late") >= 2
    assert harness.queued() == 0


def test_fires_survive_a_redis_restart(own_redis: RedisServer, tmp_path: Path) -> None:
    """Redis stops for a moment: the leader keeps its lease, retries the fires and enqueues them all."""
    env = {"TASKMASTER_REDIS_URL": own_redis.url, "TASKMASTER_DATA_DIR": str(tmp_path / "var")}
    harness = Harness(
        {**env, "TASKMASTER_SCHEDULES_FILE": str(tmp_path / "s.yaml")}, redis.Redis.from_url(own_redis.url)
    )
    harness.write(document(every_entry("restart", overlap="allow")))
    try:
        scheduler = harness.scheduler()
        scheduler.start()
        wait_for(lambda: len(harness.fire_times("restart")) >= 1, 5, what="a first fire")
        retries_before = metric("taskmaster_scheduler_enqueue_retries_total", entry="restart")
        own_redis.stop()
        wait_for(
            lambda: metric("taskmaster_scheduler_enqueue_retries_total", entry="restart") > retries_before,
            5,
            what="a retry",
        )
        own_redis.start()
        down_until = datetime.now(UTC)
        wait_for(lambda: harness.fire_times("restart")[-1] >= down_until, 10, what="fires after the restart")
        assert scheduler.is_leader
        assert_consecutive(harness.fire_times("restart"))
    finally:
        harness.close()
        harness.client.close()


def test_invalid_edit_is_refused_and_the_old_schedule_keeps_firing(harness: Harness) -> None:
    """reload() of an invalid file returns False, records the error, and the last good schedule fires on."""
    harness.write(document(every_entry("steady", overlap="allow")))
    scheduler = harness.scheduler()
    scheduler.start()
    wait_for(lambda: harness.queued() >= 1, 5, what="a first fire")
    errors_before = metric("taskmaster_scheduler_reload_errors_total")

    harness.write(
        document(every_entry("steady", overlap="allow"), "  broken:\n    job: no.such.job\n    every: 1s\n")
    )
    assert scheduler.reload() is False
    assert (
        scheduler.last_reload_error is not None and "unknown job 'no.such.job'" in scheduler.last_reload_error
    )
    assert f"{harness.path}:8: entry 'broken'" in scheduler.last_reload_error
    stored = harness.client.hget(harness.keys.scheduler_status, "reload_error")
    assert stored is not None and b"no.such.job" in stored
    assert metric("taskmaster_scheduler_reload_errors_total") > errors_before
    assert set(scheduler.schedule.entries) == {"steady"}
    fired = harness.queued()
    wait_for(lambda: harness.queued() >= fired + 2, 5, what="the old schedule to keep firing")

    harness.write(document(every_entry("steady", overlap="allow"), every_entry("fixed", overlap="allow")))
    assert scheduler.reload() is True
    assert scheduler.last_reload_error is None
    assert harness.client.hget(harness.keys.scheduler_status, "reload_error") is None
    wait_for(lambda: harness.fire_times("fixed"), 5, what="the new entry to fire")


def test_file_change_is_reloaded_without_a_signal(harness: Harness) -> None:
    """Editing the file is enough: the scheduler notices the new mtime and loads it."""
    harness.write(document(every_entry("first", "1h")))
    scheduler = harness.scheduler()
    scheduler.start()
    wait_for(lambda: scheduler.is_leader, 5, what="leadership")
    harness.write(document(every_entry("first", "1h"), every_entry("second", overlap="allow")))
    wait_for(lambda: "second" in scheduler.schedule.entries, 5, what="the reload")
    wait_for(lambda: harness.fire_times("second"), 5, what="the new entry to fire")


def test_status_shows_leader_and_next_fires(harness: Harness) -> None:
    """The leader writes its id and each entry's next three fire times into the status hash."""
    harness.write(
        document(
            "  daily:\n    job: test.tick\n    cron: '0 6 * * *'\n    timezone: Europe/Berlin\n",
            every_entry("off", "1h", enabled="false"),
        )
    )
    scheduler = harness.scheduler()
    scheduler.start()
    wait_for(
        lambda: read_status(harness.client, harness.keys).leader == scheduler.leader_id, 5, what="status"
    )
    status = read_status(harness.client, harness.keys)
    assert status.live
    daily = [parse_iso(t) for t in status.next_fires["daily"]]
    assert len(daily) == 3 and daily == sorted(daily) and daily[0] > datetime.now(UTC)
    assert all(t.astimezone(scheduler.schedule.entries["daily"].trigger.zone).hour == 6 for t in daily)  # type: ignore[union-attr]
    assert status.next_fires["off"] == []
    scheduler.stop()
    assert harness.client.get(harness.keys.scheduler_leader) is None
    assert not read_status(harness.client, harness.keys).live
