"""Breakers kept in this process: the same rules as the Redis backend, under one lock.

For tests and for a single process that needs no sharing. Mirrors breaker.lua step by step
(including its expiry of idle state), so the contract tests hold for both.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from worker.breaker.base import BreakerBackend, Outcome, Policy, State

DEFAULT_RETAIN_MS = 86_400_000


@dataclass
class _Record:
    state: State = "closed"
    failures: list[int] = field(default_factory=list)
    opened_ms: int = 0
    probe_until_ms: int = 0
    expires_ms: int = 0


class MemoryBackend(BreakerBackend):
    def __init__(self, *, retain_ms: int = DEFAULT_RETAIN_MS) -> None:
        self._retain_ms = retain_ms
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        self._seen_ms: dict[str, int] = {}

    def allow(self, name: str, policy: Policy, now_ms: int | None = None) -> Outcome:
        now = _now(now_ms)
        with self._lock:
            record = self._load(name, now)
            if record.state == "open":
                ready_ms = record.opened_ms + policy.cooldown_ms
                if now >= ready_ms:
                    return self._grant_probe(name, record, policy, now, previous="open")
                return Outcome(state="open", retry_after_ms=ready_ms - now)
            if record.state == "half_open":
                if now >= record.probe_until_ms:
                    return self._grant_probe(name, record, policy, now, previous=None)
                return Outcome(state="half_open", retry_after_ms=record.probe_until_ms - now)
            return Outcome(state="closed", allowed=True)

    def record_success(self, name: str, policy: Policy, now_ms: int | None = None) -> Outcome:
        now = _now(now_ms)
        with self._lock:
            record = self._load(name, now)
            if record.state == "half_open":
                self._records.pop(name, None)
                self._register(name, now)
                return Outcome(state="closed", previous="half_open")
            return Outcome(state=record.state)

    def record_failure(self, name: str, policy: Policy, now_ms: int | None = None) -> Outcome:
        now = _now(now_ms)
        with self._lock:
            record = self._load(name, now)
            if record.state == "half_open":
                return self._open(name, record, policy, now, failures=1)
            if record.state == "open":
                return Outcome(state="open")
            kept = [t for t in record.failures if t > now - policy.window_ms]
            kept.append(now)
            kept = kept[-policy.failure_threshold :]
            if len(kept) >= policy.failure_threshold:
                return self._open(name, record, policy, now, failures=len(kept))
            record.failures = kept
            record.expires_ms = now + policy.window_ms
            self._records[name] = record
            self._register(name, now)
            return Outcome(state="closed", failures=len(kept))

    def state(self, name: str) -> State:
        with self._lock:
            return self._load(name, _now(None)).state

    def states(self) -> dict[str, State]:
        now = _now(None)
        with self._lock:
            return {name: self._load(name, now).state for name in sorted(self._seen_ms)}

    # The steps below run under the lock.
    def _load(self, name: str, now: int) -> _Record:
        record = self._records.get(name)
        if record is None or record.expires_ms <= now:
            self._records.pop(name, None)
            return _Record()
        return record

    def _open(self, name: str, record: _Record, policy: Policy, now: int, *, failures: int) -> Outcome:
        previous = record.state
        self._records[name] = _Record(
            state="open",
            opened_ms=now,
            expires_ms=now + policy.cooldown_ms + policy.probe_timeout_ms + self._retain_ms,
        )
        self._register(name, now)
        return Outcome(state="open", previous=previous, failures=failures)

    def _grant_probe(
        self, name: str, record: _Record, policy: Policy, now: int, *, previous: State | None
    ) -> Outcome:
        record.state = "half_open"
        record.probe_until_ms = now + policy.probe_timeout_ms
        record.expires_ms = now + policy.probe_timeout_ms + self._retain_ms
        self._records[name] = record
        self._register(name, now)
        return Outcome(
            state="half_open", allowed=True, probe=True, reissued=previous is None, previous=previous
        )

    def _register(self, name: str, now: int) -> None:
        self._seen_ms[name] = now
        for stale in [n for n, seen in self._seen_ms.items() if seen <= now - self._retain_ms]:
            del self._seen_ms[stale]


def _now(now_ms: int | None) -> int:
    return int(time.time() * 1000) if now_ms is None else now_ms
