"""The circuit breaker's contract, run against every backend: in memory and on a real Redis.

A controllable clock steps through windows and cool-downs, so no test sleeps through one.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import structlog
from prometheus_client import REGISTRY

from worker.breaker import BreakerBackend, BreakerOpen, CircuitBreaker, MemoryBackend, RedisBackend

THRESHOLD = 3
WINDOW_S = 10.0
COOLDOWN_S = 30.0


class Clock:
    """Seconds since the epoch, moved by the test; starts at the real time."""

    def __init__(self) -> None:
        self.now_s = float(int(time.time()))

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


class ServiceDown(Exception):
    """Stands for a provider's 5xx or timeout."""


class Rejected(Exception):
    """Stands for a provider refusing one request (a bad address): not the provider's fault."""


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[BreakerBackend]:
    if request.param == "memory":
        yield MemoryBackend()
    else:
        yield RedisBackend(request.getfixturevalue("redis_client"), "taskmaster")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(backend: BreakerBackend, clock: Clock, name: str | None = None, **kwargs: float) -> CircuitBreaker:
    options: dict[str, float] = {"window_s": WINDOW_S, "cooldown_s": COOLDOWN_S, **kwargs}
    return CircuitBreaker(
        backend,
        name or f"svc-{uuid.uuid4().hex[:8]}",
        failure_threshold=THRESHOLD,
        clock=clock,
        exclude=(Rejected,),
        **options,
    )


def trip(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(THRESHOLD):
        breaker.record_failure()
        clock.advance(0.1)
    assert breaker.state() == "open"


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_breaker_never_used_is_closed_and_allows(backend: BreakerBackend, clock: Clock) -> None:
    """A breaker with no history is closed and lets every call through."""
    breaker = make(backend, clock)
    assert breaker.state() == "closed"
    assert all(breaker.allow() for _ in range(10))


def test_threshold_failures_within_the_window_open_it(backend: BreakerBackend, clock: Clock) -> None:
    """One failure short of the threshold keeps it closed; the threshold-th opens it."""
    breaker = make(backend, clock)
    for _ in range(THRESHOLD - 1):
        breaker.record_failure()
        clock.advance(1)
    assert breaker.state() == "closed"
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state() == "open"
    assert not breaker.allow()


def test_failures_outside_the_window_do_not_count(backend: BreakerBackend, clock: Clock) -> None:
    """Failures older than the window are forgotten: spread-out failures never open it."""
    breaker = make(backend, clock)
    # Given failures 6 s apart: at most two ever fall within one 10 s window
    for _ in range(THRESHOLD * 3):
        breaker.record_failure()
        clock.advance(6)
        assert breaker.state() == "closed"
    # When two more come quickly after the last one, three are within the window
    clock.advance(-6 + 1)
    breaker.record_failure()
    # Then it opens
    assert breaker.state() == "open"


def test_successes_do_not_hide_failures(backend: BreakerBackend, clock: Clock) -> None:
    """Successes between failures leave the count alone: the threshold is per window."""
    breaker = make(backend, clock)
    for _ in range(THRESHOLD):
        breaker.record_success()
        breaker.record_failure()
        clock.advance(0.5)
    assert breaker.state() == "open"


def test_open_refuses_with_the_rest_of_the_cooldown(backend: BreakerBackend, clock: Clock) -> None:
    """While open, guard raises BreakerOpen naming the breaker and when to retry, and runs nothing."""
    breaker = make(backend, clock)
    trip(breaker, clock)
    clock.advance(10 - 0.1)
    ran = []
    with pytest.raises(BreakerOpen) as refused, breaker.guard():
        ran.append(True)
    assert not ran
    assert refused.value.name == breaker.name
    assert refused.value.retry_after_s == pytest.approx(COOLDOWN_S - 10, abs=0.01)


def test_after_the_cooldown_exactly_one_probe_goes(backend: BreakerBackend, clock: Clock) -> None:
    """Once the cool-down is over, the first caller is the probe and everyone else is refused."""
    breaker = make(backend, clock)
    trip(breaker, clock)
    clock.advance(COOLDOWN_S - 1)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()
    assert breaker.state() == "half_open"
    assert [breaker.allow() for _ in range(20)] == [False] * 20


def test_many_threads_race_and_one_probes(backend: BreakerBackend, clock: Clock) -> None:
    """Twenty threads asking at the same moment after the cool-down: exactly one is let through."""
    breaker = make(backend, clock)
    trip(breaker, clock)
    clock.advance(COOLDOWN_S)
    start = threading.Barrier(20)
    answers: list[bool] = []
    lock = threading.Lock()

    def ask() -> None:
        start.wait()
        allowed = breaker.allow()
        with lock:
            answers.append(allowed)

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [False] * 19 + [True]


def test_probe_success_closes_and_forgets_past_failures(backend: BreakerBackend, clock: Clock) -> None:
    """A successful probe closes the breaker; it then needs a full threshold again to open."""
    breaker = make(backend, clock)
    trip(breaker, clock)
    clock.advance(COOLDOWN_S)
    with breaker.guard():
        pass
    assert breaker.state() == "closed"
    assert all(breaker.allow() for _ in range(5))
    for _ in range(THRESHOLD - 1):
        breaker.record_failure()
    assert breaker.state() == "closed"


def test_probe_failure_reopens_for_another_cooldown(backend: BreakerBackend, clock: Clock) -> None:
    """A failed probe reopens the breaker, counted from the probe's failure."""
    breaker = make(backend, clock)
    trip(breaker, clock)
    clock.advance(COOLDOWN_S)
    with pytest.raises(ServiceDown), breaker.guard():
        raise ServiceDown
    assert breaker.state() == "open"
    clock.advance(COOLDOWN_S - 1)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_a_probe_that_never_reports_expires(backend: BreakerBackend, clock: Clock) -> None:
    """A probe whose caller died holds the slot for the probe timeout only, then another caller probes."""
    breaker = make(backend, clock, probe_timeout_s=5)
    trip(breaker, clock)
    clock.advance(COOLDOWN_S)
    assert breaker.allow()  # the probe, which never reports
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    with structlog.testing.capture_logs() as logs:
        assert breaker.allow()
    assert not breaker.allow()
    assert [e["event"] for e in logs] == ["breaker.probe_expired"]
    assert logs[0]["log_level"] == "warning"


def test_excluded_exceptions_are_not_failures(backend: BreakerBackend, clock: Clock) -> None:
    """An excluded exception (the service refused one request) propagates but counts as a success."""
    breaker = make(backend, clock)
    for _ in range(THRESHOLD * 2):
        with pytest.raises(Rejected), breaker.guard():
            raise Rejected
    assert breaker.state() == "closed"
    # A probe answered with a refusal shows the service is up: it closes the breaker.
    trip(breaker, clock)
    clock.advance(COOLDOWN_S)
    with pytest.raises(KeyError), breaker.guard(exclude=(KeyError,)):
        raise KeyError("per-call exclusion")
    assert breaker.state() == "closed"


def test_interruptions_record_nothing(backend: BreakerBackend, clock: Clock) -> None:
    """KeyboardInterrupt inside guard is neither a failure nor a success of the service."""
    breaker = make(backend, clock)
    for _ in range(THRESHOLD):
        with pytest.raises(KeyboardInterrupt), breaker.guard():
            raise KeyboardInterrupt
    assert breaker.state() == "closed"


def test_late_reports_while_open_change_nothing(backend: BreakerBackend, clock: Clock) -> None:
    """Reports of calls let through before it opened neither extend nor end the cool-down."""
    breaker = make(backend, clock)
    trip(breaker, clock)
    clock.advance(COOLDOWN_S / 2)
    breaker.record_failure()
    breaker.record_success()
    assert breaker.state() == "open"
    clock.advance(COOLDOWN_S / 2)
    assert breaker.allow()


def test_states_lists_every_breaker_that_recorded(backend: BreakerBackend, clock: Clock) -> None:
    """The listing for `status` shows each breaker's state by name."""
    failing = make(backend, clock, name="sendgrid")
    flaky = make(backend, clock, name="fcm")
    probing = make(backend, clock, name="webhook:42")
    trip(failing, clock)
    trip(probing, clock)
    flaky.record_failure()
    clock.advance(COOLDOWN_S)
    assert probing.allow()
    assert backend.states() == {"fcm": "closed", "sendgrid": "open", "webhook:42": "half_open"}


def test_transitions_are_logged(backend: BreakerBackend, clock: Clock) -> None:
    """Opening and reopening log warnings; half-open and closing log info, each naming the breaker."""
    breaker = make(backend, clock)
    with structlog.testing.capture_logs() as logs:
        trip(breaker, clock)
        clock.advance(COOLDOWN_S)
        breaker.allow()
        breaker.record_failure()
        clock.advance(COOLDOWN_S)
        breaker.allow()
        breaker.record_success()
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("breaker.opened", "warning"),
        ("breaker.half_open", "info"),
        ("breaker.reopened", "warning"),
        ("breaker.half_open", "info"),
        ("breaker.closed", "info"),
    ]
    assert {e["breaker"] for e in logs} == {breaker.name}
    assert logs[0]["failures"] == THRESHOLD


def test_transitions_and_refusals_are_counted(backend: BreakerBackend, clock: Clock) -> None:
    """Each transition, refusal and probe moves its Prometheus counter once."""
    breaker = make(backend, clock)
    name = breaker.name
    trip(breaker, clock)
    for _ in range(4):
        breaker.allow()
    clock.advance(COOLDOWN_S)
    breaker.allow()
    breaker.allow()
    breaker.record_success()
    transitions = "taskmaster_breaker_transitions_total"
    assert sample(transitions, {"name": name, "from_state": "closed", "to_state": "open"}) == 1
    assert sample(transitions, {"name": name, "from_state": "open", "to_state": "half_open"}) == 1
    assert sample(transitions, {"name": name, "from_state": "half_open", "to_state": "closed"}) == 1
    assert sample("taskmaster_breaker_refused_total", {"name": name}) == 5
    assert sample("taskmaster_breaker_probes_total", {"name": name}) == 1
