"""Multi-level rate limits (per user, global, burst) shared by every daemon through Redis.

``RateLimiter(RedisBackend(client, keys)).acquire([(key, Rule(...)), ...])`` -> ``Decision``.
``MemoryBackend`` has the same semantics in one process, for tests.
"""

from worker.ratelimit.base import (
    ALLOWED,
    Backend,
    Check,
    Decision,
    LimiterUnavailable,
    RateLimitError,
    Request,
    Rule,
    RuleError,
)
from worker.ratelimit.limiter import RateLimiter
from worker.ratelimit.memory import MemoryBackend
from worker.ratelimit.redis import RedisBackend

__all__ = [
    "ALLOWED",
    "Backend",
    "Check",
    "Decision",
    "LimiterUnavailable",
    "MemoryBackend",
    "RateLimitError",
    "RateLimiter",
    "RedisBackend",
    "Request",
    "Rule",
    "RuleError",
]
