"""The contract of a circuit breaker's storage: states, policy, outcomes, errors, backends.

A breaker is closed (calls go through), open (calls are refused) or half-open (exactly one
caller, the probe, may try; every other caller is refused as if open until the probe
reports). The algorithm lives in the backend, because each decision must be atomic across
every process and machine that share the breaker: a backend offers three operations, each
one atomic step that reads the state, decides, and writes the new state.

- ``allow``: closed lets the call through. Open refuses it until the cool-down has passed;
  then it turns half-open and this caller becomes the probe. Half-open refuses every caller
  until the probe's slot expires (``probe_timeout_ms``: its caller died without reporting),
  then hands the slot to the next caller.
- ``record_failure``: closed counts the failure; ``failure_threshold`` failures within the
  last ``window_ms`` open it. Half-open reopens for another cool-down. Open ignores it (a
  late report of a call let through before it opened).
- ``record_success``: half-open closes, forgetting past failures. Closed and open ignore it:
  a few successes do not hide a failure rate, and a late success must not end a cool-down.

Times are milliseconds since the epoch. ``now_ms=None`` uses the backend's own clock (the
Redis server's, so machines with skewed clocks agree); tests pass ``now_ms`` to step
through cool-downs without sleeping.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, get_args

from worker.errors import TaskmasterError

State = Literal["closed", "open", "half_open"]
STATES: tuple[State, ...] = get_args(State)


class BreakerError(TaskmasterError):
    """Root of the errors of circuit breakers."""


class BreakerOpen(BreakerError):
    """The breaker refused the call: the service is failing, try again after ``retry_after_s``.

    Control flow, not a fault of the caller: a job retries later or fails over to another
    provider. ``retry_after_s`` is the rest of the cool-down, or of the probe's slot while a
    probe is out (it usually reports sooner).
    """

    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(f"circuit breaker {name!r} is open; retry in {retry_after_s:.1f}s")
        self.name = name
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[type[BreakerOpen], tuple[str, float]]:
        # Custom __init__ arguments: without this the exception cannot cross a process.
        return (type(self), (self.name, self.retry_after_s))


class BreakerUnavailable(BreakerError):
    """The breaker's storage did not answer, so no decision could be made (cause chained)."""


@dataclass(frozen=True)
class Policy:
    """When a breaker opens and for how long; the same for every process sharing it."""

    failure_threshold: int
    window_ms: int
    cooldown_ms: int
    probe_timeout_ms: int

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        for field in ("window_ms", "cooldown_ms", "probe_timeout_ms"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be at least 1 ms")


@dataclass(frozen=True)
class Outcome:
    """What one backend operation decided."""

    state: State
    """The state after the operation."""
    allowed: bool = False
    """``allow`` only: the call may go ahead."""
    probe: bool = False
    """``allow`` only: this caller holds the half-open probe slot."""
    reissued: bool = False
    """The probe slot had expired without a report and was handed to this caller."""
    retry_after_ms: int = 0
    """Refused calls: how long until the breaker may let a call through."""
    previous: State | None = None
    """The state before the operation, when the operation changed it."""
    failures: int = 0
    """Failures counted within the window after the operation (closed, or the one opening it)."""


class BreakerBackend(ABC):
    """Storage of breakers by name: three atomic operations, and reads for `status`."""

    @abstractmethod
    def allow(self, name: str, policy: Policy, now_ms: int | None = None) -> Outcome:
        """May a call go through now? Turns open into half-open once the cool-down is over."""

    @abstractmethod
    def record_success(self, name: str, policy: Policy, now_ms: int | None = None) -> Outcome:
        """The service answered properly: closes a half-open breaker."""

    @abstractmethod
    def record_failure(self, name: str, policy: Policy, now_ms: int | None = None) -> Outcome:
        """The service failed: counts towards the threshold, or reopens a half-open breaker."""

    @abstractmethod
    def state(self, name: str) -> State:
        """The stored state; a breaker never heard of is closed."""

    @abstractmethod
    def states(self) -> dict[str, State]:
        """Every breaker that recorded something recently, by name, in name order."""
