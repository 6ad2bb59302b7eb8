"""The running scheduler: one background thread that leads (or waits to), fires and reloads.

Each daemon running the scheduler part builds one ``Scheduler``. They share Redis and elect a
leader (leader.py); only the leader fires. The thread wakes for the next due fire, a lock
renewal or a file check, and at least every 0.5 s, so fires are enqueued well within a second.

- Catch-up (planner.py): on becoming leader, fires that fell due while no scheduler ran are
  decided by each entry's ``catchup`` policy, from the settled times in Redis (state.py).
- A fire Redis refuses is retried with backoff while its misfire grace lasts and this daemon
  still holds its lease; if the lease runs out first, the next leader's catch-up decides it.
- Reload: ``reload()`` (SIGHUP) or a change of the file's mtime, size or inode (polled every
  second). An invalid file is refused: logged, kept in ``last_reload_error`` and the status
  hash, counted, and the last good schedule keeps firing. An entry that is new or changed by a
  reload starts from the reload time (no catch-up of fires its old definition did not have).
- Status (status.py documents the fields): the leader writes its id and each entry's next three
  fire times into ``keys.scheduler_status``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import redis

from worker.errors import ConfigError
from worker.logging import get_logger
from worker.runtime import Runtime
from worker.scheduler import metrics
from worker.scheduler.config import load_schedule
from worker.scheduler.entry import Entry, Schedule
from worker.scheduler.firing import Firer
from worker.scheduler.leader import LeaderLock, new_leader_id
from worker.scheduler.planner import Fire, plan_due
from worker.scheduler.state import SchedulerStore
from worker.scheduler.status import status_fields
from worker.scheduler.timing import iso

log = get_logger(__name__)

MAX_SLEEP_S = 0.5
FILE_POLL_S = 1.0
STATUS_REFRESH_S = 5.0
RETRY_BASE_S = 0.25
RETRY_MAX_S = 10.0


@dataclass
class _Run:
    """What the leader tracks of one enabled entry."""

    entry: Entry
    settled: datetime
    recorded: datetime | None = None
    next_due: datetime | None = None
    pending: deque[Fire] = field(default_factory=deque)
    attempts: int = 0
    retry_at: float = 0.0  # monotonic


class Scheduler:
    def __init__(self, runtime: Runtime, path: Path) -> None:
        """Load ``path`` (ConfigError if invalid) and prepare; nothing runs before start()."""
        self.runtime = runtime
        self.path = path
        self.leader_id = new_leader_id()
        self.schedule: Schedule = load_schedule(path, runtime.registry)
        self.loaded_at = datetime.now(UTC)
        self.last_reload_error: str | None = None
        self.leading_since: datetime | None = None
        self._store = SchedulerStore(runtime.redis, runtime.keys)
        self._lock = LeaderLock(
            runtime.redis, runtime.keys.scheduler_leader, self.leader_id, runtime.settings.scheduler_lock_ttl
        )
        self._firer = Firer(runtime, self._store)
        self._reload_lock = threading.Lock()
        self._file_sig = _signature(path)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # Owned by the scheduler thread.
        self._runs: dict[str, _Run] | None = None
        self._applied: Schedule | None = None
        self._next_lock_step = 0.0
        self._next_file_check = 0.0
        self._next_status = 0.0
        self._last_status: dict[str, str] = {}

    @property
    def is_leader(self) -> bool:
        return self.leading_since is not None and self._lock.held()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the scheduler is already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()
        log.info("scheduler started", id=self.leader_id, source=self.schedule.source)

    def stop(self, *, release: bool = True, timeout_s: float = 10.0) -> None:
        """Stop the thread, then give up leadership so a standby takes over at once.

        ``release=False`` leaves the lock to expire, as a crashed daemon would (for tests).
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        was_leader = self.leading_since is not None
        self.leading_since, self._runs, self._applied = None, None, None
        if not release:
            self._lock.forget()
            return
        try:
            if self._lock.release() or was_leader:
                self._store.clear_leader(self.leader_id)
        except redis.RedisError as exc:
            log.warning("could not release the scheduler lock; it expires on its own", error=str(exc))

    def reload(self) -> bool:
        """Re-read the file; True if it replaced the schedule, False if it was refused."""
        with self._reload_lock:
            self._file_sig = _signature(self.path)
            now = datetime.now(UTC)
            try:
                schedule = load_schedule(self.path, self.runtime.registry)
            except ConfigError as exc:
                message = str(exc)
                self.last_reload_error = message
                metrics.RELOAD_ERRORS.inc()
                log.error("schedules file refused; the last good schedule keeps running", error=message)
                self._redis_quietly(lambda: self._store.set_reload_error(message, now))
                return False
            self.schedule, self.loaded_at, self.last_reload_error = schedule, now, None
            self._redis_quietly(self._store.clear_reload_error)
            log.info("schedules loaded", source=schedule.source, entries=len(schedule.entries))
        self._next_status = 0.0
        self._wake.set()
        return True

    # The scheduler thread.

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait_s = self._tick()
            except Exception:
                log.exception("scheduler step failed; trying again")
                wait_s = 1.0
            self._wake.wait(max(0.0, min(wait_s, MAX_SLEEP_S)))
            self._wake.clear()

    def _tick(self) -> float:
        mono = time.monotonic()
        if mono >= self._next_file_check:
            self._next_file_check = mono + FILE_POLL_S
            if _signature(self.path) != self._file_sig:
                self.reload()
        if self.leading_since is not None and not self._lock.held():
            self._step_down("its lease ran out before it could be renewed")
        if mono >= self._next_lock_step:
            self._lock_step()
        waits = [self._next_file_check - mono, self._next_lock_step - mono]
        if self.leading_since is not None:
            try:
                waits.append(self._fire_due())
                self._refresh_status()
            except redis.RedisError as exc:
                log.warning("scheduler: Redis unavailable", error=str(exc))
        return min(waits)

    def _lock_step(self) -> None:
        interval = self._lock.renew_interval_s
        try:
            if self.leading_since is not None:
                if not self._lock.renew():
                    self._step_down("another daemon holds the lock")
            elif self._lock.acquire():
                self.leading_since = datetime.now(UTC)
                self._runs, self._applied = None, None
                metrics.LEADER_CHANGES.inc()
                log.info("became scheduler leader", id=self.leader_id)
            self._next_lock_step = time.monotonic() + interval
        except redis.RedisError as exc:
            log.warning("scheduler lock: Redis unavailable", error=str(exc))
            self._next_lock_step = time.monotonic() + min(interval, MAX_SLEEP_S)

    def _step_down(self, why: str) -> None:
        if self.leading_since is None:
            return
        dropped = sum(len(run.pending) for run in (self._runs or {}).values())
        log.warning("no longer scheduler leader", id=self.leader_id, reason=why, pending_dropped=dropped)
        self.leading_since = None
        self._runs, self._applied = None, None
        self._lock.forget()

    def _fire_due(self) -> float:
        """Fire what is due; return the seconds until something else will be."""
        runs = self._sync_runs()
        now = datetime.now(UTC)
        mono = time.monotonic()
        assert self.leading_since is not None
        waits = [MAX_SLEEP_S]
        for run in runs.values():
            if run.next_due is None or run.next_due <= now:
                plan = plan_due(run.entry, run.settled, now, leading_since=self.leading_since)
                run.settled, run.next_due = plan.settled, plan.next_due
                run.pending.extend(plan.fire)
                for reason, count in plan.missed.items():
                    metrics.MISSED.labels(run.entry.name, reason).inc(count)
                    log.info("fires missed", entry=run.entry.name, reason=reason, count=count)
            self._send_pending(run, now, mono)
            if not run.pending and run.recorded != run.settled:
                self._store.record(run.entry.name, run.settled)
                run.recorded = run.settled
            if run.pending:
                waits.append(run.retry_at - mono)
            elif run.next_due is not None:
                waits.append((run.next_due - datetime.now(UTC)).total_seconds())
        return min(waits)

    def _send_pending(self, run: _Run, now: datetime, mono: float) -> None:
        grace_s = run.entry.misfire_grace_s
        while run.pending and self._lock.held():
            fire = run.pending[0]
            if (now - fire.due).total_seconds() > grace_s:
                metrics.MISSED.labels(run.entry.name, "misfire").inc()
                log.warning("fire dropped: not enqueued within its misfire grace", entry=run.entry.name)
            elif mono < run.retry_at:
                return
            else:
                try:
                    self._firer.fire(run.entry, fire)
                except redis.RedisError as exc:
                    run.attempts += 1
                    run.retry_at = mono + min(RETRY_BASE_S * 2 ** (run.attempts - 1), RETRY_MAX_S)
                    metrics.ENQUEUE_RETRIES.labels(run.entry.name).inc()
                    log.warning("fire not enqueued, will retry", entry=run.entry.name, error=str(exc))
                    return
            run.attempts, run.retry_at = 0, 0.0
            run.pending.popleft()
            self._store.record(run.entry.name, fire.scheduled)
            run.recorded = fire.scheduled

    def _sync_runs(self) -> dict[str, _Run]:
        """Bring the tracked entries in line with the schedule in use (after leading or reload)."""
        schedule = self.schedule
        if self._runs is not None and self._applied is schedule:
            return self._runs
        now = datetime.now(UTC)
        old = self._runs
        enabled = {name: e for name, e in schedule.entries.items() if e.enabled}
        runs: dict[str, _Run] = {}
        if old is None:  # just became leader: catch up from what Redis remembers
            settled = self._store.settled(sorted(enabled), now)
            runs = {
                name: _Run(entry, settled[name], recorded=settled[name]) for name, entry in enabled.items()
            }
        else:
            for name, entry in enabled.items():
                if name in old and old[name].entry == entry:
                    runs[name] = old[name]
                else:  # new or changed: starts now
                    start = max(now, old[name].settled) if name in old else now
                    runs[name] = _Run(entry, start)
        self._runs, self._applied = runs, schedule
        self._next_status = 0.0
        return runs

    def _refresh_status(self) -> None:
        runs = self._runs or {}
        fields = status_fields(self, {name: run.settled for name, run in runs.items()})
        mono = time.monotonic()
        if fields == self._last_status and mono < self._next_status:
            return
        self._store.write_status({**fields, "updated_at": iso(datetime.now(UTC))})
        self._last_status, self._next_status = fields, mono + STATUS_REFRESH_S

    def _redis_quietly(self, write: Callable[[], None]) -> None:
        try:
            write()
        except redis.RedisError as exc:
            log.warning("could not update the scheduler status", error=str(exc))


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
