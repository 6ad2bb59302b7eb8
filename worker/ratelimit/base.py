"""The rate limiter's contract: rules, decisions, requests, and the backend a limiter stands on.

A ``Rule`` is one limit, enforced with GCRA (the generic cell rate algorithm, a token bucket kept
as one timestamp): ``limit`` deliveries per ``period_s`` on average, of which up to ``burst`` may
go at once after a quiet spell. Its state is one number per key, the theoretical arrival time
(TAT, in microseconds of wall time): the bucket is full up to ``TAT - now``; a request of cost
``c`` fits when ``max(TAT, now) + c * interval - capacity <= now``, and otherwise the left-hand
side minus ``now`` is exactly how long to wait. References: brandur.org/rate-limiting and
jameslao.com/post/gcra-burst-limit (burst as bucket capacity ``burst * interval``).

A backend decides a batch of requests in order, each atomically across all its checks
(admitted on every level and counted on all, or counted on none), and keeps each key only as
long as its TAT is in the future, so idle keys cost no memory.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from worker.errors import TaskmasterError


class RateLimitError(TaskmasterError):
    """Root of the errors of the rate limiter."""


class RuleError(RateLimitError, ValueError):
    """A rule or a request that can never be decided (bad numbers, a cost above the burst)."""


class LimiterUnavailable(RateLimitError):
    """The storage behind the limiter did not answer; the caller retries later."""


@dataclass(frozen=True)
class Rule:
    """``limit`` per ``period_s`` on average; ``burst`` at once (default: ``limit``, at least 1).

    ``Rule(limit=10, period_s=60.0)`` is 10 a minute, all 10 usable at once;
    ``Rule(limit=100, period_s=1.0, burst=200)`` is 100 a second with a bucket of 200.
    """

    limit: float
    period_s: float
    burst: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.limit) and self.limit > 0):
            raise RuleError(f"limit must be a positive number, not {self.limit!r}")
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise RuleError(f"period_s must be a positive number, not {self.period_s!r}")
        if self.burst is not None and self.burst < 1:
            raise RuleError(f"burst must be at least 1, not {self.burst!r}")
        if self.interval_us < 1:
            # State is kept in whole microseconds; a finer interval would never be counted.
            rate = self.limit / self.period_s
            raise RuleError(f"at most 1,000,000 per second can be limited, not {rate:g}")

    @property
    def capacity(self) -> int:
        """How many may go at once from a full bucket."""
        return self.burst if self.burst is not None else max(1, math.floor(self.limit))

    @property
    def interval_us(self) -> float:
        """The emission interval: how much of the bucket one unit of cost fills."""
        return self.period_s * 1_000_000 / self.limit

    @property
    def capacity_us(self) -> float:
        return self.interval_us * self.capacity


@dataclass(frozen=True)
class Decision:
    """``allowed``: counted on every level. Otherwise nothing was counted and the same request
    would be admitted after ``retry_after_s`` if nobody else takes the room first."""

    allowed: bool
    retry_after_s: float


ALLOWED = Decision(allowed=True, retry_after_s=0.0)

Check = tuple[str, Rule]


@dataclass(frozen=True)
class Request:
    """One decision: every (key, rule) check must admit ``cost`` for any to be counted."""

    checks: tuple[Check, ...]
    cost: int = 1

    def __post_init__(self) -> None:
        if self.cost < 1:
            raise RuleError(f"cost must be at least 1, not {self.cost!r}")
        seen: set[str] = set()
        for key, rule in self.checks:
            if not key:
                raise RuleError("a rate limit key must not be empty")
            if key in seen:
                # Two rules on one key would share one TAT and undercount each other.
                raise RuleError(f"key {key!r} appears twice in one request")
            seen.add(key)
            if self.cost > rule.capacity:
                raise RuleError(f"cost {self.cost} exceeds the burst {rule.capacity} of {key!r}")


class Backend(ABC):
    """Storage of GCRA state with one atomic operation: decide a batch of requests."""

    @abstractmethod
    def decide(
        self, requests: Sequence[Request], *, commit: bool = True, book: bool = False
    ) -> list[Decision]:
        """Decide ``requests`` in order, each all-or-nothing, in one step of the storage.

        With ``commit=False`` nothing is counted: each decision is what that request alone
        would get now (a peek). With ``book``, a refused request is counted at the first slot
        it would get: its ``retry_after_s`` is that slot, kept for it (it goes then without
        asking again), and whoever asks next is told to wait for the slot after.
        """

    @abstractmethod
    def ttl_s(self, key: str) -> float | None:
        """Seconds until the state of ``key`` expires; None when nothing is held for it."""

    @abstractmethod
    def reset(self, keys: Sequence[str]) -> None:
        """Forget the state of ``keys``: their buckets are full again."""
