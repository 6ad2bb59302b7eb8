"""One email through the failover chain: breaker, rate limiter, provider, classified error.

For each provider in TASKMASTER_EMAIL_PROVIDERS order:
- an open breaker skips it (it failed too often lately, shared through Redis);
- its rate limit may hold the email briefly; longer, the next provider is tried;
- a rejection of the email itself ends the chain: the email fails, nowhere else is tried;
- a transient or credentials failure counts against the breaker and passes the email on;
- an unknown outcome (a timeout after the request went out) is retried once on the same
  provider when it takes an idempotency key (Resend), else passed on with the same Message-ID,
  and counted apart because the provider may have accepted it.
When every provider is skipped or failed, `ChainExhausted` says when trying again makes sense.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from email.message import EmailMessage

from jobs.email import metrics
from jobs.email.providers.base import Provider, SendResult
from jobs.email.providers.errors import ProviderError
from worker.breaker import CircuitBreaker
from worker.errors import TaskmasterError
from worker.logging import get_logger
from worker.ratelimit import RateLimiter, Rule

log = get_logger(__name__)

# Providers that deduplicate by our idempotency key, so a retry after a timeout cannot duplicate.
IDEMPOTENT = frozenset({"resend"})
# Error codes saying the provider is still processing an earlier request with the same key.
STILL_SENDING = frozenset({"concurrent_idempotent_requests"})
# Waiting for a provider's rate limit this long, at most, before passing the email on.
MAX_RATE_WAIT_S = 1.0


class EmailRejected(TaskmasterError):
    """A provider refused the email itself; no other provider is tried."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


class ChainExhausted(TaskmasterError):
    """No provider took the email now; ``retry_after_s`` is the earliest sensible retry."""

    def __init__(self, reasons: Sequence[str], retry_after_s: float | None) -> None:
        super().__init__("no email provider took the email: " + "; ".join(reasons))
        self.reasons = list(reasons)
        self.retry_after_s = retry_after_s


class Chain:
    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        breakers: Mapping[str, CircuitBreaker],
        limiter: RateLimiter | None,
        rules: Mapping[str, Rule],
    ) -> None:
        self.providers = list(providers)
        self.breakers = dict(breakers)
        self.limiter = limiter
        self.rules = dict(rules)

    def send(self, message: EmailMessage, *, idempotency_key: str, envelope_to: list[str]) -> SendResult:
        reasons: list[str] = []
        waits: list[float] = []
        for provider in self.providers:
            name = provider.name
            breaker = self.breakers.get(name)
            # The rate limit first: an email held back by it must not take the breaker's single
            # half-open probe, which it would then never report on.
            wait_s = self._rate_wait(name)
            if wait_s is not None:
                reasons.append(f"{name}: rate limited for {wait_s:.1f}s")
                waits.append(wait_s)
                metrics.FAILOVERS.labels(name, "rate_limited").inc()
                continue
            if breaker is not None and not breaker.allow():
                reasons.append(f"{name}: circuit open")
                metrics.FAILOVERS.labels(name, "breaker_open").inc()
                continue
            try:
                result = self._attempt(provider, message, idempotency_key, envelope_to)
            except ProviderError as error:
                if error.kind == "rejected":
                    if breaker is not None:
                        breaker.record_success()  # the provider answered; the email was at fault
                    metrics.REJECTED.labels(name).inc()
                    raise EmailRejected(error) from error
                if error.code in STILL_SENDING:
                    # The provider is still handling our first request with this key: another
                    # provider would send a second copy. Wait and ask this one again.
                    if breaker is not None:
                        breaker.record_success()
                    raise ChainExhausted([str(error)], error.retry_after_s) from error
                if breaker is not None:
                    breaker.record_failure()
                if error.outcome == "unknown":
                    metrics.UNKNOWN_OUTCOME_FAILOVERS.labels(name).inc()
                metrics.FAILOVERS.labels(name, error.kind).inc()
                if error.retry_after_s is not None:
                    waits.append(error.retry_after_s)
                reasons.append(str(error))
                log.warning("email.failover", provider=name, kind=error.kind, outcome=error.outcome)
                continue
            if breaker is not None:
                breaker.record_success()
            metrics.SENT.labels(name).inc()
            return result
        raise ChainExhausted(reasons, min(waits) if waits else None)

    def _attempt(
        self, provider: Provider, message: EmailMessage, idempotency_key: str, envelope_to: list[str]
    ) -> SendResult:
        try:
            return provider.send(message, idempotency_key=idempotency_key, envelope_to=envelope_to)
        except ProviderError as error:
            if error.outcome != "unknown" or provider.name not in IDEMPOTENT:
                raise
            # The provider keeps our key: asking again answers with what it did the first time.
            log.info("email.retry_same_provider", provider=provider.name)
            return provider.send(message, idempotency_key=idempotency_key, envelope_to=envelope_to)

    def _rate_wait(self, name: str) -> float | None:
        """Take a slot of the provider's rate limit, waiting up to MAX_RATE_WAIT_S; else the wait."""
        rule = self.rules.get(name)
        if rule is None or self.limiter is None:
            return None
        deadline = time.monotonic() + MAX_RATE_WAIT_S
        while True:
            decision = self.limiter.acquire([(f"email:{name}", rule)])
            if decision.allowed:
                return None
            if time.monotonic() + decision.retry_after_s > deadline:
                return decision.retry_after_s
            time.sleep(decision.retry_after_s)
