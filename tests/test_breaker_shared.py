"""Breakers shared through a real Redis: several clients and processes, server time, status, metrics."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest
import redis
import structlog
from prometheus_client import CollectorRegistry

from tests.helpers import wait_for
from tests.redis_server import RedisServer
from worker.breaker import BreakerUnavailable, CircuitBreaker, MemoryBackend, RedisBackend, breaker_states
from worker.breaker.metrics import BreakerStateCollector
from worker.breaker.redis import breaker_key, registry_key
from worker.settings import load_settings

PREFIX = "taskmaster"


def breaker_on(url: str, name: str, *, now_s: float | None = None, **options: Any) -> CircuitBreaker:
    """A breaker with its own Redis client, as another machine would have."""
    settings: dict[str, Any] = {"failure_threshold": 3, "window_s": 60.0, "cooldown_s": 30.0, **options}
    clock = None if now_s is None else (lambda: now_s)
    return CircuitBreaker(RedisBackend(redis.Redis.from_url(url), PREFIX), name, clock=clock, **settings)


def race_for_probe(url: str, name: str, now_s: float, threads: int, start: Any, results: Any) -> None:
    """In a child process: wait for every process, then ask from many threads at once."""
    breaker = breaker_on(url, name, now_s=now_s)
    answers: list[bool] = []
    lock = threading.Lock()
    ready = threading.Barrier(threads)

    def ask() -> None:
        ready.wait()
        allowed = breaker.allow()
        with lock:
            answers.append(allowed)

    workers = [threading.Thread(target=ask) for _ in range(threads)]
    start.wait()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(sum(answers))


def test_failures_from_two_machines_add_up(redis_url: str) -> None:
    """Failures recorded through two separate clients count towards one threshold; both see it open."""
    # Given two machines, each with its own connection and breaker object
    one = breaker_on(redis_url, "sendgrid")
    two = breaker_on(redis_url, "sendgrid")
    # When each sees some of the failures
    one.record_failure()
    two.record_failure()
    assert one.state() == "closed"
    one.record_failure()
    # Then both refuse calls
    assert two.state() == "open"
    assert not two.allow()
    assert not one.allow()


def test_exactly_one_probe_across_two_processes(redis_url: str) -> None:
    """Two processes of eight threads each race after the cool-down: one caller in all gets the probe."""
    # Given a breaker opened 31 s ago (cool-down 30 s)
    opened_s = time.time()
    opener = breaker_on(redis_url, "fcm", now_s=opened_s, failure_threshold=1)
    opener.record_failure()
    assert opener.state() == "open"
    # When two processes ask at the same time
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    results = ctx.Queue()
    args = (redis_url, "fcm", opened_s + 31, 8, start, results)
    processes = [ctx.Process(target=race_for_probe, args=args) for _ in range(2)]
    for process in processes:
        process.start()
    granted = [results.get(timeout=30) for _ in processes]
    for process in processes:
        process.join(timeout=10)
        assert process.exitcode == 0
    # Then exactly one of the sixteen callers probes
    assert sum(granted) == 1
    assert opener.state() == "half_open"


def test_server_clock_drives_the_cooldown(redis_url: str) -> None:
    """Without an injected clock, Redis's own time ends the cool-down; one probe, then closed."""
    breaker = breaker_on(redis_url, "smtp", failure_threshold=1, cooldown_s=0.2)
    other = breaker_on(redis_url, "smtp", failure_threshold=1, cooldown_s=0.2)
    breaker.record_failure()
    assert not breaker.allow()
    wait_for(breaker.allow, timeout_s=5, what="the cool-down to end on the server's clock")
    assert not other.allow()
    other.record_success()
    assert breaker.state() == "closed"
    assert other.allow()


def test_keys_expire(redis_client: redis.Redis, redis_url: str) -> None:
    """Every key a breaker writes carries a TTL: closed failures for the window, open state longer."""
    breaker = breaker_on(redis_url, "resend", window_s=60.0)
    breaker.record_failure()
    assert 0 < redis_client.pttl(breaker_key(PREFIX, "resend")) <= 60_000
    assert redis_client.pttl(registry_key(PREFIX)) > 0
    breaker.record_failure()
    breaker.record_failure()
    assert redis_client.pttl(breaker_key(PREFIX, "resend")) > 60_000


def test_a_closed_breaker_leaves_no_state_behind(redis_client: redis.Redis, redis_url: str) -> None:
    """After a successful probe the breaker's hash is gone; the listing still names it, closed."""
    breaker = breaker_on(redis_url, "postmark", failure_threshold=1, cooldown_s=0.05)
    breaker.record_failure()
    wait_for(breaker.allow, timeout_s=5, what="the probe")
    breaker.record_success()
    assert not redis_client.exists(breaker_key(PREFIX, "postmark"))
    assert breaker_states(redis_client, PREFIX) == {"postmark": "closed"}


def test_states_are_listed_per_prefix(redis_client: redis.Redis, redis_url: str) -> None:
    """breaker_states lists the breakers of one prefix only, from a client of any decoding."""
    breaker_on(redis_url, "sendgrid", failure_threshold=1).record_failure()
    other = CircuitBreaker(
        RedisBackend(redis_client, "staging"), "sendgrid", failure_threshold=5, window_s=60, cooldown_s=30
    )
    other.record_failure()
    decoding = redis.Redis.from_url(redis_url, decode_responses=True)
    assert breaker_states(decoding, PREFIX) == {"sendgrid": "open"}
    assert breaker_states(redis_client, "staging") == {"sendgrid": "closed"}
    assert breaker_states(redis_client, "nothing-here") == {}


def test_state_gauge_reads_redis_at_scrape(redis_client: redis.Redis, redis_url: str) -> None:
    """The state gauge follows what Redis holds, whichever process made the change."""
    registry = CollectorRegistry()
    registry.register(BreakerStateCollector(lambda: breaker_states(redis_client, PREFIX)))

    def gauge(name: str, state: str) -> float | None:
        return registry.get_sample_value("taskmaster_breaker_state", {"name": name, "state": state})

    breaker = breaker_on(redis_url, "fcm", failure_threshold=2)
    breaker.record_failure()
    assert (gauge("fcm", "closed"), gauge("fcm", "open")) == (1.0, 0.0)
    breaker_on(redis_url, "fcm", failure_threshold=2).record_failure()
    assert (gauge("fcm", "closed"), gauge("fcm", "open"), gauge("fcm", "half_open")) == (0.0, 1.0, 0.0)


def test_state_gauge_is_left_out_when_redis_is_away() -> None:
    """A scrape while Redis is unreachable omits the gauge instead of failing the whole scrape."""

    def unreachable() -> dict[str, Any]:
        raise BreakerUnavailable("reading breaker states: Redis did not answer (ConnectionError)")

    registry = CollectorRegistry()
    registry.register(BreakerStateCollector(unreachable))
    assert registry.get_sample_value("taskmaster_breaker_state", {"name": "x", "state": "open"}) is None


def test_redis_away_is_reported_as_breaker_unavailable(own_redis: RedisServer) -> None:
    """With Redis down, deciding raises BreakerUnavailable (cause chained, no address in the text);
    an outcome guard cannot record is logged and the block's own exception still propagates."""
    breaker = breaker_on(own_redis.url, "smtp")
    with structlog.testing.capture_logs() as logs, pytest.raises(ValueError), breaker.guard():
        own_redis.stop()
        raise ValueError("the provider's own error wins")
    assert [(e["event"], e["log_level"]) for e in logs] == [("breaker.record_lost", "warning")]
    with pytest.raises(BreakerUnavailable) as refused:
        breaker.allow()
    assert isinstance(refused.value.__cause__, redis.RedisError)
    assert "127.0.0.1" not in str(refused.value)


def test_from_settings_uses_the_breaker_settings() -> None:
    """from_settings takes the threshold, window and cool-down from TASKMASTER_BREAKER_*."""
    settings = load_settings(
        {
            "TASKMASTER_BREAKER_FAILURE_THRESHOLD": "7",
            "TASKMASTER_BREAKER_WINDOW": "2m",
            "TASKMASTER_BREAKER_COOLDOWN": "45s",
        }
    )
    breaker = CircuitBreaker.from_settings(MemoryBackend(), "sendgrid", settings)
    assert (breaker.policy.failure_threshold, breaker.policy.window_ms) == (7, 120_000)
    assert (breaker.policy.cooldown_ms, breaker.policy.probe_timeout_ms) == (45_000, 45_000)


def test_a_trusted_closed_answer_saves_round_trips_and_ends_with_any_other_answer(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """Within trust_closed_s of a closed answer, allow and success ask Redis nothing; a breaker
    opened by another machine is seen once the trust runs out, one opened by this one at once."""
    here = breaker_on(redis_url, "postmark", trust_closed_s=0.3)
    elsewhere = breaker_on(redis_url, "postmark")
    assert here.allow()
    before = script_calls(redis_client)
    for _ in range(50):
        assert here.allow()
        here.record_success()
    assert script_calls(redis_client) == before  # no round trip while trusted
    # Another machine opens it: this one still trusts its closed answer for the moment, then asks.
    for _ in range(3):
        elsewhere.record_failure()
    assert elsewhere.state() == "open"
    assert here.allow()
    wait_for(lambda: not here.allow(), timeout_s=5)
    # A failure seen here ends the trust at once.
    redis_client.delete(breaker_key(PREFIX, "postmark"))
    mine = breaker_on(redis_url, "postmark", trust_closed_s=60)
    assert mine.allow()
    for _ in range(3):
        mine.record_failure()
    assert not mine.allow()


def script_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))
