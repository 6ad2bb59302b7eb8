"""The rate limiter's contract, run against every backend: the in-memory one and Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from tests.helpers import wait_for
from tests.redis_server import RedisServer
from worker.keys import Keys
from worker.ratelimit import (
    LimiterUnavailable,
    MemoryBackend,
    RateLimiter,
    RateLimitError,
    RedisBackend,
    Request,
    Rule,
    RuleError,
)

HOUR_S = 3600.0


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest) -> RateLimiter:
    if request.param == "memory":
        return RateLimiter(MemoryBackend())
    client: redis.Redis = request.getfixturevalue("redis_client")
    return RateLimiter(RedisBackend(client, Keys("taskmaster")))


def timed(call: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock bounds around a call, in the clock Redis TIME reads on this machine."""
    before = time.time()
    call()
    return before, time.time()


def test_admits_up_to_the_limit_then_says_exactly_how_long_to_wait(limiter: RateLimiter) -> None:
    """5 a second: five go at once, the sixth waits 200 ms less the time since the first."""
    rule = Rule(limit=5, period_s=1.0)
    before = time.time()
    assert all(limiter.acquire([("user:1", rule)]).allowed for _ in range(5))
    denied = limiter.acquire([("user:1", rule)])
    elapsed_s = time.time() - before
    assert not denied.allowed
    # The sixth was asked between 0 and elapsed_s after the first: the wait is 0.2 minus that.
    assert 0.2 - elapsed_s - 0.001 <= denied.retry_after_s <= 0.2 + 0.000_001
    asked_at = time.time()
    admitted = limiter.wait([("user:1", rule)], timeout_s=5.0)
    assert admitted.allowed
    assert time.time() >= asked_at + denied.retry_after_s - elapsed_s - 0.002  # never early


def test_wait_returns_the_refusal_when_the_wait_would_pass_the_deadline(limiter: RateLimiter) -> None:
    """wait never sleeps into a wait longer than its timeout: it hands the refusal back at once."""
    rule = Rule(limit=1, period_s=HOUR_S)
    assert limiter.wait([("k", rule)], timeout_s=0.5).allowed
    refused = limiter.wait([("k", rule)], timeout_s=0.5)
    assert not refused.allowed and refused.retry_after_s > HOUR_S - 1


def test_the_burst_goes_at_once_then_the_rate_holds(limiter: RateLimiter) -> None:
    """One an hour with a burst of 3: three go now, the fourth waits about an hour."""
    rule = Rule(limit=1, period_s=HOUR_S, burst=3)
    results = [limiter.acquire([("global", rule)]) for _ in range(4)]
    assert [d.allowed for d in results] == [True, True, True, False]
    assert HOUR_S - 1.0 < results[3].retry_after_s <= HOUR_S
    assert Rule(limit=10, period_s=60.0).capacity == 10  # by default the burst is the limit


def test_a_refusal_on_one_level_counts_on_no_level(limiter: RateLimiter) -> None:
    """User level 2 an hour, global 3 an hour: a user over its limit leaves the global room."""
    per_user, overall = Rule(limit=2, period_s=HOUR_S), Rule(limit=3, period_s=HOUR_S)

    def deliver(user: str) -> bool:
        return limiter.acquire([(f"user:{user}", per_user), ("global", overall)]).allowed

    # Given user a at its own limit
    assert deliver("a") and deliver("a")
    # When a is refused, the global level is not charged: b still fits, then c is refused by it
    refused = limiter.acquire([("user:a", per_user), ("global", overall)])
    assert not refused.allowed and HOUR_S / 2 - 1 < refused.retry_after_s <= HOUR_S / 2
    assert deliver("b")
    by_global = limiter.acquire([("user:c", per_user), ("global", overall)])
    assert not by_global.allowed and HOUR_S / 3 - 1 < by_global.retry_after_s <= HOUR_S / 3
    # Then c's own level holds nothing: the refusal counted nowhere
    assert limiter.backend.ttl_s("user:c") is None
    assert limiter.backend.ttl_s("user:b") is not None


def test_cost_counts_several_units_at_once(limiter: RateLimiter) -> None:
    """Ten an hour: 4 + 4 fit, another 4 waits for two intervals, 2 fits, then nothing."""
    rule, interval_s = Rule(limit=10, period_s=HOUR_S), HOUR_S / 10
    assert limiter.acquire([("k", rule)], cost=4).allowed
    assert limiter.acquire([("k", rule)], cost=4).allowed
    over = limiter.acquire([("k", rule)], cost=4)
    assert not over.allowed and 2 * interval_s - 1 < over.retry_after_s <= 2 * interval_s
    assert limiter.acquire([("k", rule)], cost=2).allowed
    last = limiter.acquire([("k", rule)])
    assert not last.allowed and interval_s - 1 < last.retry_after_s <= interval_s
    with pytest.raises(RuleError):
        limiter.acquire([("k", rule)], cost=11)  # more than the bucket holds: could never go


def test_keys_expire_when_their_bucket_is_full_again(limiter: RateLimiter) -> None:
    """State is kept only until the bucket refills, so an idle user costs nothing."""
    rule = Rule(limit=10, period_s=0.5)  # 50 ms per delivery
    for _ in range(3):
        assert limiter.acquire([("user:idle", rule)]).allowed
    ttl_s = limiter.backend.ttl_s("user:idle")
    assert ttl_s is not None and 0 < ttl_s <= 0.15 + 0.001
    wait_for(lambda: limiter.backend.ttl_s("user:idle") is None, timeout_s=5, what="the key to expire")


def test_peek_counts_nothing_and_reset_refills(limiter: RateLimiter) -> None:
    """peek answers like acquire without counting; reset forgets a key's state."""
    rule = Rule(limit=2, period_s=HOUR_S)
    assert limiter.peek([("k", rule)]).allowed
    assert limiter.acquire([("k", rule)]).allowed and limiter.acquire([("k", rule)]).allowed
    assert not limiter.peek([("k", rule)]).allowed
    limiter.reset(["k"])
    assert limiter.peek([("k", rule)]).allowed and limiter.acquire([("k", rule)]).allowed


def test_a_batch_is_decided_in_order(limiter: RateLimiter) -> None:
    """Three requests in one step on a limit of two: the first two go; a peek batch counts none."""
    request = Request((("k", Rule(limit=2, period_s=HOUR_S)),))
    assert [d.allowed for d in limiter.backend.decide([request] * 3, commit=False)] == [True] * 3
    assert [d.allowed for d in limiter.backend.decide([request] * 3)] == [True, True, False]


def test_requests_that_can_never_be_decided_are_refused() -> None:
    """Bad numbers (or over a million a second), an empty or repeated key, or zero cost: RuleError."""
    for limit, period_s, burst in ((0.0, 1.0, None), (1.0, 0.0, None), (1.0, 1.0, 0), (2e6, 1.0, None)):
        with pytest.raises(RuleError):
            Rule(limit, period_s, burst)
    rule = Rule(limit=1, period_s=1.0)
    cases: list[tuple[tuple[tuple[str, Rule], ...], int]] = [
        ((("k", rule), ("k", rule)), 1),
        ((("", rule),), 1),
        ((("k", rule),), 0),
    ]
    for checks, cost in cases:
        with pytest.raises(ValueError):
            Request(checks, cost)
    assert RateLimiter(MemoryBackend()).acquire([]).allowed  # no level: nothing to wait for


def test_memory_backend_arithmetic_with_a_fake_clock() -> None:
    """With a controlled clock the retry-after is exact to the microsecond and refills on time."""
    now_us = [1_700_000_000_000_000]
    backend = MemoryBackend(clock_us=lambda: now_us[0], sweep_interval_s=0.0)
    limiter = RateLimiter(backend, batch=False)
    rule = Rule(limit=100, period_s=1.0, burst=5)  # 10 ms apart, five at once
    assert all(limiter.acquire([("g", rule)]).allowed for _ in range(5))
    assert limiter.acquire([("g", rule)]).retry_after_s == 0.010
    now_us[0] += 4_000
    assert limiter.acquire([("g", rule)]).retry_after_s == 0.006
    now_us[0] += 6_000
    assert limiter.acquire([("g", rule)]).allowed
    assert limiter.acquire([("g", rule)]).retry_after_s == 0.010
    now_us[0] += 60_000  # all five back: the bucket holds no more than its burst
    assert len(backend) == 1
    assert limiter.acquire([("other", rule)]).allowed and len(backend) == 1  # "g" swept
    assert [limiter.acquire([("g", rule)]).allowed for _ in range(6)] == [True] * 5 + [False]


def test_redis_down_is_reported_as_limiter_unavailable(own_redis: RedisServer) -> None:
    """A Redis that does not answer becomes LimiterUnavailable, with the redis error chained."""
    client = redis.Redis.from_url(own_redis.url, socket_connect_timeout=0.5)
    limiter = RateLimiter(RedisBackend(client, Keys("taskmaster")))
    assert limiter.acquire([("k", Rule(limit=1, period_s=1.0))]).allowed
    own_redis.stop()
    with pytest.raises(LimiterUnavailable) as caught:
        limiter.acquire([("k", Rule(limit=1, period_s=1.0))])
    assert isinstance(caught.value.__cause__, redis.ConnectionError)


def test_a_redis_refusal_is_a_rate_limit_error(redis_client: redis.Redis) -> None:
    """A command Redis refuses (a key of the wrong type) becomes RateLimitError, the cause chained."""
    redis_client.rpush("taskmaster:rl:k", "not a timestamp")
    limiter = RateLimiter(RedisBackend(redis_client, Keys("taskmaster")))
    with pytest.raises(RateLimitError) as caught:
        limiter.acquire([("k", Rule(limit=1, period_s=1.0))])
    assert isinstance(caught.value.__cause__, redis.ResponseError)


def test_booking_gives_each_refused_request_a_slot_of_its_own(limiter: RateLimiter) -> None:
    """10 an hour: the eleventh and twelfth are booked the next two slots, 6 minutes apart, and
    those slots are theirs: whoever asks next is told to wait past both."""
    rule = Rule(limit=10, period_s=HOUR_S)
    checks = [("user:1", rule), ("global", Rule(limit=100, period_s=HOUR_S))]
    decisions = limiter.book_many([checks] * 12)
    assert all(d.allowed for d in decisions[:10])
    eleventh, twelfth = decisions[10], decisions[11]
    assert not eleventh.allowed and not twelfth.allowed
    assert 359.0 < eleventh.retry_after_s <= 360.0
    assert twelfth.retry_after_s == pytest.approx(eleventh.retry_after_s + 360.0, abs=0.01)
    after = limiter.acquire([("user:1", rule)])
    assert not after.allowed and after.retry_after_s == pytest.approx(twelfth.retry_after_s + 360.0, abs=0.5)
    # A booking counts on every level of its request, like an admission: 12 units of 36 s
    ttl = limiter.backend.ttl_s("global")
    assert ttl is not None and 431.0 < ttl <= 432.0
