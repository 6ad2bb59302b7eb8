"""Circuit breakers for outside services, shared by every process and machine through Redis.

``base`` states the contract (states, policy, errors, backend operations), ``redis`` and
``memory`` implement it, ``breaker`` is the CircuitBreaker callers hold, ``metrics`` its
Prometheus side.
"""

from __future__ import annotations

from worker.breaker.base import BreakerBackend, BreakerError, BreakerOpen, BreakerUnavailable, State
from worker.breaker.breaker import CircuitBreaker
from worker.breaker.memory import MemoryBackend
from worker.breaker.redis import RedisBackend, breaker_states

__all__ = [
    "BreakerBackend",
    "BreakerError",
    "BreakerOpen",
    "BreakerUnavailable",
    "CircuitBreaker",
    "MemoryBackend",
    "RedisBackend",
    "State",
    "breaker_states",
]
