"""The circuit breaker a caller of an outside service holds: one per provider, by name.

    breaker = CircuitBreaker.from_settings(RedisBackend(runtime.redis, runtime.keys.prefix),
                                           "sendgrid", runtime.settings, exclude=(Rejected,))
    with breaker.guard():            # BreakerOpen when refused
        response = client.send(...)  # raising counts as a failure, unless excluded

The caller decides what is a failure of the service: an exception type listed in ``exclude``
(an email the provider rejected) is the service answering properly, so it counts as a
success. Callers that classify outcomes themselves use ``allow`` and ``record_*``.

A closed answer may be trusted for a moment (``trust_closed_s``): a healthy service then costs
no Redis round trip per call. Every answer this process gets (its own failures included)
refreshes or ends that trust at once, so a breaker another process opened is seen within that
moment, and one this process's failures opened, at once.

Every transition is logged (opening at warning level) and counted by the process that
decided it. Names appear in logs, metrics and `status`: never put a secret in one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from worker.breaker import metrics
from worker.breaker.base import BreakerBackend, BreakerOpen, BreakerUnavailable, Outcome, Policy, State
from worker.logging import get_logger
from worker.settings import Settings

log = get_logger(__name__)

# How long ``from_settings`` breakers trust a closed answer: a tenth of a second of calls a
# breaker opened elsewhere may still let through, for no round trip per call while healthy.
TRUST_CLOSED_S = 0.1

ExceptionTypes = tuple[type[BaseException], ...]


class CircuitBreaker:
    def __init__(
        self,
        backend: BreakerBackend,
        name: str,
        *,
        failure_threshold: int,
        window_s: float,
        cooldown_s: float,
        probe_timeout_s: float | None = None,
        exclude: ExceptionTypes = (),
        clock: Callable[[], float] | None = None,
        trust_closed_s: float = 0.0,
    ) -> None:
        """``probe_timeout_s`` (default: the cool-down) bounds how long a probe that never
        reports (its caller died) keeps every other caller out. ``clock`` returns seconds
        since the epoch; by default the backend's own clock decides (Redis server time).
        ``trust_closed_s``: how long a closed answer stands without asking again (0: never).
        """
        if not name:
            raise ValueError("a circuit breaker needs a name")
        self.name = name
        self.policy = Policy(
            failure_threshold=failure_threshold,
            window_ms=round(window_s * 1000),
            cooldown_ms=round(cooldown_s * 1000),
            probe_timeout_ms=round((cooldown_s if probe_timeout_s is None else probe_timeout_s) * 1000),
        )
        self._backend = backend
        self._exclude = exclude
        self._clock = clock
        self._trust_closed_s = trust_closed_s
        self._closed_until = 0.0  # monotonic time until which a closed answer stands

    @classmethod
    def from_settings(
        cls,
        backend: BreakerBackend,
        name: str,
        settings: Settings,
        *,
        exclude: ExceptionTypes = (),
    ) -> CircuitBreaker:
        """A breaker with TASKMASTER_BREAKER_FAILURE_THRESHOLD, _WINDOW and _COOLDOWN, trusting
        a closed answer for TRUST_CLOSED_S."""
        return cls(
            backend,
            name,
            failure_threshold=settings.breaker_failure_threshold,
            window_s=settings.breaker_window,
            cooldown_s=settings.breaker_cooldown,
            exclude=exclude,
            trust_closed_s=TRUST_CLOSED_S,
        )

    def allow(self) -> bool:
        """True when closed; False when open; True for exactly one caller when half-open."""
        if self._trusted_closed():
            return True
        return self._allow().allowed

    def record_success(self) -> None:
        """The service answered properly (a refusal that is not its fault counts too).

        A success changes nothing in a closed breaker: while it is trusted closed, nothing is sent.
        """
        if self._trusted_closed():
            return
        self._observe(self._backend.record_success(self.name, self.policy, self._now_ms()))

    def record_failure(self) -> None:
        """The service failed: an error, a timeout, a 5xx."""
        self._observe(self._backend.record_failure(self.name, self.policy, self._now_ms()))

    def state(self) -> State:
        return self._backend.state(self.name)

    @contextmanager
    def guard(self, *, exclude: ExceptionTypes = ()) -> Iterator[None]:
        """Run the block if allowed, else raise BreakerOpen; record how it ended.

        An exception of a type in ``exclude`` (here or given to the constructor) records a
        success; any other Exception a failure. Either way it propagates. Interruptions
        (KeyboardInterrupt, SystemExit) record nothing: they say nothing about the service.
        """
        if not self._trusted_closed():
            outcome = self._allow()
            if not outcome.allowed:
                raise BreakerOpen(self.name, outcome.retry_after_ms / 1000)
        try:
            yield
        except (*self._exclude, *exclude):
            self._record_quietly(self.record_success)
            raise
        except Exception:
            self._record_quietly(self.record_failure)
            raise
        self._record_quietly(self.record_success)

    def _allow(self) -> Outcome:
        outcome = self._backend.allow(self.name, self.policy, self._now_ms())
        self._observe(outcome)
        if outcome.probe:
            metrics.PROBES.labels(self.name).inc()
        elif not outcome.allowed:
            metrics.REFUSED.labels(self.name).inc()
        return outcome

    def _record_quietly(self, record: Callable[[], None]) -> None:
        # The call has happened: failing its job now because Redis blinked would redo an
        # outside effect for the sake of one lost observation.
        try:
            record()
        except BreakerUnavailable as exc:
            log.warning("breaker.record_lost", breaker=self.name, error=str(exc))

    def _now_ms(self) -> int | None:
        return None if self._clock is None else round(self._clock() * 1000)

    def _trusted_closed(self) -> bool:
        return self._trust_closed_s > 0 and time.monotonic() < self._closed_until

    def _observe(self, outcome: Outcome) -> None:
        if outcome.state == "closed" and not outcome.probe:
            self._closed_until = time.monotonic() + self._trust_closed_s
        else:
            self._closed_until = 0.0
        if outcome.reissued:
            log.warning(
                "breaker.probe_expired",
                breaker=self.name,
                probe_timeout_s=self.policy.probe_timeout_ms / 1000,
            )
        previous = outcome.previous
        if previous is None or previous == outcome.state:
            return
        metrics.TRANSITIONS.labels(self.name, previous, outcome.state).inc()
        if outcome.state == "open":
            log.warning(
                "breaker.opened" if previous == "closed" else "breaker.reopened",
                breaker=self.name,
                failures=outcome.failures,
                window_s=self.policy.window_ms / 1000,
                cooldown_s=self.policy.cooldown_ms / 1000,
            )
        elif outcome.state == "half_open":
            log.info("breaker.half_open", breaker=self.name)
        else:
            log.info("breaker.closed", breaker=self.name)
