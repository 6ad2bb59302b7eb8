"""An in-process backend with the Redis backend's semantics, for unit tests and single processes.

The same GCRA arithmetic as limiter.lua, in microseconds with the same rounding, so the contract
tests hold for both. It limits one process only: never use it where several daemons share limits.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence

from worker.ratelimit.base import ALLOWED, Backend, Decision, Request


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class MemoryBackend(Backend):
    """``clock_us`` is wall time in µs by default; tests may pass a fake one."""

    def __init__(self, clock_us: Callable[[], int] = wall_clock_us, sweep_interval_s: float = 1.0) -> None:
        self._clock_us = clock_us
        self._tats: dict[str, int] = {}
        self._lock = threading.Lock()
        self._sweep_every_us = sweep_interval_s * 1_000_000
        self._next_sweep_us = 0.0

    def __len__(self) -> int:
        """How many keys hold state (expired ones go at the next sweep)."""
        with self._lock:
            return len(self._tats)

    def decide(
        self, requests: Sequence[Request], *, commit: bool = True, book: bool = False
    ) -> list[Decision]:
        with self._lock:
            now = self._clock_us()
            self._sweep(now)
            return [self._decide(request, now, commit, book) for request in requests]

    def _decide(self, request: Request, now: int, commit: bool, book: bool) -> Decision:
        wait = 0.0
        new_tats: list[tuple[str, int]] = []
        for key, rule in request.checks:
            tat = max(self._tats.get(key, now), now)
            new_tat = tat + request.cost * rule.interval_us
            wait = max(wait, new_tat - rule.capacity_us - now)
            new_tats.append((key, math.ceil(new_tat)))
        if (wait <= 0 and commit) or (wait > 0 and book):
            self._tats.update(new_tats)
        if wait > 0:
            return Decision(False, math.ceil(wait) / 1_000_000)
        return ALLOWED

    def _sweep(self, now: int) -> None:
        # A TAT in the past is the same as no state: drop those now and then, as Redis expires keys.
        if now < self._next_sweep_us:
            return
        self._next_sweep_us = now + self._sweep_every_us
        for key in [key for key, tat in self._tats.items() if tat <= now]:
            del self._tats[key]

    def ttl_s(self, key: str) -> float | None:
        with self._lock:
            now = self._clock_us()
            tat = self._tats.get(key)
            if tat is None or tat <= now:
                self._tats.pop(key, None)
                return None
            return (tat - now) / 1_000_000

    def reset(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._tats.pop(key, None)
