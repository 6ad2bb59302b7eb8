"""Racing deciders never over-admit: processes and threads on one limit in a real Redis."""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from multiprocessing.synchronize import Barrier as ProcessBarrier
from typing import Any

import pytest
import redis

from tests.helpers import wait_for
from worker.keys import Keys
from worker.ratelimit import (
    Backend,
    Check,
    Decision,
    LimiterUnavailable,
    MemoryBackend,
    RateLimiter,
    RedisBackend,
    Request,
    Rule,
)

# An hour-long period: the race takes about a second, so no room refills while it runs and
# "exactly the limit admitted" is exact, whatever the machine's speed.
LIMIT = 50
RULE = Rule(limit=LIMIT, period_s=3600.0)


def race_threads(
    limiter: RateLimiter, threads: int, tries: int, checks_for: Callable[[], list[Check]]
) -> list[list[Check]]:
    """Start ``threads`` threads together, each calling acquire ``tries`` times; return what was admitted."""
    start = threading.Barrier(threads)
    admitted: list[list[Check]] = []
    lock = threading.Lock()

    def run() -> None:
        start.wait()
        mine: list[list[Check]] = []
        for _ in range(tries):
            checks = checks_for()
            if limiter.acquire(checks).allowed:
                mine.append(checks)
        with lock:
            admitted.extend(mine)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers)
    return admitted


def race_process(url: str, threads: int, tries: int, barrier: ProcessBarrier, results: Any) -> None:
    """One racing process: its own client and batching limiter, ``threads`` threads."""
    client = redis.Redis.from_url(url)
    limiter = RateLimiter(RedisBackend(client, Keys("taskmaster")))
    barrier.wait(timeout=30)
    results.put(len(race_threads(limiter, threads, tries, lambda: [("deliveries", RULE)])))
    client.close()


def test_processes_of_threads_admit_exactly_the_limit(redis_url: str) -> None:
    """4 processes x 8 threads x 100 tries on a limit of 50 admit exactly 50 between them."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    results = context.Queue()
    processes = [
        context.Process(target=race_process, args=(redis_url, 8, 100, barrier, results)) for _ in range(4)
    ]
    for process in processes:
        process.start()
    counts = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert sum(counts) == LIMIT


class CountingBackend(Backend):
    """Counts round trips to the backend it wraps."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.calls = 0
        self.decisions = 0

    def decide(
        self, requests: Sequence[Request], *, commit: bool = True, book: bool = False
    ) -> list[Decision]:
        self.calls += 1  # only the one thread in flight calls this
        self.decisions += len(requests)
        return self.inner.decide(requests, commit=commit)

    def ttl_s(self, key: str) -> float | None:
        return self.inner.ttl_s(key)

    def reset(self, keys: Sequence[str]) -> None:
        self.inner.reset(keys)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return MemoryBackend()
    client: redis.Redis = request.getfixturevalue("redis_client")
    return RedisBackend(client, Keys("taskmaster"))


def test_batched_threads_admit_exactly_the_limit(backend: Backend) -> None:
    """16 threads x 50 tries on a limit of 50, batching on: exactly 50 go, every try decided."""
    counting = CountingBackend(backend)
    admitted = race_threads(RateLimiter(counting), 16, 50, lambda: [("deliveries", RULE)])
    assert len(admitted) == LIMIT
    assert counting.decisions == 16 * 50


class GatedBackend(CountingBackend):
    """Holds each round trip until the test opens the gate, recording each batch's size."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.batches: list[int] = []

    def decide(
        self, requests: Sequence[Request], *, commit: bool = True, book: bool = False
    ) -> list[Decision]:
        self.batches.append(len(requests))
        self.gate.wait(timeout=10)
        return super().decide(requests, commit=commit)


def test_callers_arriving_during_a_round_trip_share_the_next_one(backend: Backend) -> None:
    """Seven callers that arrive while one decision is in flight go together in one batch."""
    gated = GatedBackend(backend)
    limiter = RateLimiter(gated)
    decisions: list[Decision] = []

    def call() -> None:
        decisions.append(limiter.acquire([("deliveries", RULE)]))

    # Given one decision in flight
    first = threading.Thread(target=call)
    first.start()
    wait_for(lambda: gated.batches == [1], what="the first round trip")
    # When seven more callers queue behind it
    others = [threading.Thread(target=call) for _ in range(7)]
    for thread in others:
        thread.start()
    wait_for(lambda: limiter.queued == 7, what="seven queued callers")
    gated.gate.set()
    for thread in [first, *others]:
        thread.join(timeout=10)
    # Then they took one round trip between them, and all eight were decided
    assert gated.batches == [1, 7]
    assert len(decisions) == 8 and all(decision.allowed for decision in decisions)


def test_racing_users_and_a_global_level_stay_within_both(backend: Backend) -> None:
    """10 users of 5 each under a global 30: exactly 30 go, no user past 5, all-or-nothing holds."""
    per_user, overall = Rule(limit=5, period_s=3600.0), Rule(limit=30, period_s=3600.0)
    rng = random.Random(7)
    rng_lock = threading.Lock()

    def checks() -> list[Check]:
        with rng_lock:
            user = rng.randrange(10)
        return [(f"user:{user}", per_user), ("global", overall)]

    admitted = race_threads(RateLimiter(backend), 8, 40, checks)
    per_user_counts = Counter(checks[0][0] for checks in admitted)
    assert len(admitted) == 30
    assert max(per_user_counts.values()) <= 5


class FailingBackend(MemoryBackend):
    """Fails every decision while ``failing``, after letting the test gather threads behind the first."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.failing = True

    def decide(
        self, requests: Sequence[Request], *, commit: bool = True, book: bool = False
    ) -> list[Decision]:
        if not self.failing:
            return super().decide(requests, commit=commit)
        self.gate.wait(timeout=10)
        raise LimiterUnavailable("storage down")


def test_a_failed_round_trip_fails_every_caller_it_carried() -> None:
    """When the shared round trip fails, each waiting thread gets the error, none hangs, and the
    limiter decides again once the storage is back."""
    gate = threading.Event()
    backend = FailingBackend(gate)
    limiter = RateLimiter(backend)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            limiter.acquire([("k", RULE)])
        except LimiterUnavailable as exc:
            with lock:
                errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(6)]
    for worker in workers:
        worker.start()
    wait_for(lambda: limiter.queued == 5, what="five callers behind the failing one")
    gate.set()
    for worker in workers:
        worker.join(timeout=10)
    assert len(errors) == 6
    assert len({id(error) for error in errors}) == 6  # a fresh exception in each thread
    backend.failing = False
    assert limiter.acquire([("k", RULE)]).allowed
