"""Prometheus metrics of circuit breakers.

Transitions and refusals are counted by the process that decided them (each transition is
decided once, by one script call, so the sum over every daemon counts it once). The state
itself is shared by every machine, so its gauge is read from Redis at scrape time, like the
queue depths of worker.metrics.StateCollector: a gauge set by each process would show only
what that process last saw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from worker.breaker.base import STATES, State

TRANSITIONS = Counter(
    "taskmaster_breaker_transitions_total",
    "Circuit breaker state changes decided by this process",
    ["name", "from_state", "to_state"],
)
REFUSED = Counter(
    "taskmaster_breaker_refused_total",
    "Calls refused because their circuit breaker was open or its probe was out",
    ["name"],
)
PROBES = Counter(
    "taskmaster_breaker_probes_total",
    "Calls let through a half-open breaker as its single probe",
    ["name"],
)


class BreakerStateCollector:
    """``taskmaster_breaker_state{name, state}``: 1 for each breaker's current state, else 0.

    ``states`` is typically ``lambda: breaker_states(client, prefix)``; when it raises
    (Redis away) the gauge is left out of that scrape, and taskmaster_redis_up says why.
    """

    def __init__(self, states: Callable[[], Mapping[str, State]]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        try:
            current = self._states()
        except Exception:
            return
        gauge = GaugeMetricFamily(
            "taskmaster_breaker_state",
            "Circuit breaker state, shared through Redis: 1 for the current one",
            labels=["name", "state"],
        )
        for name, state in current.items():
            for candidate in STATES:
                gauge.add_metric([name, candidate], 1.0 if candidate == state else 0.0)
        yield gauge
