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

`send_batch` does the same for many emails, through each provider's batch endpoint in requests of
its `max_batch`: per email, success or rejection settles it, anything else leaves it for the next
provider, and what no provider took comes back as its last error for the caller to retry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from jobs.email import metrics
from jobs.email.message import Outgoing
from jobs.email.providers.base import BatchItem, Provider, SendResult
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

    def send(self, message: Outgoing, *, idempotency_key: str, envelope_to: list[str]) -> SendResult:
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

    def send_batch(self, items: Sequence[BatchItem]) -> list[SendResult | ProviderError]:
        """Several emails through the chain; one SendResult or ProviderError per item, in order.

        A ``rejected`` error is final; any other error is the last one the item met, and the item is
        still to be sent (the caller retries it later). The rate limit counts one slot per request,
        not per email: the providers with a batch endpoint limit requests (Resend: 2 requests/s,
        a batch being one), and for the others a request is one email, as in ``send``.
        """
        outcomes: list[SendResult | ProviderError] = [
            ProviderError("chain", "transient", "no email provider is configured")
        ] * len(items)
        # Items still to send; an item the provider is still processing (STILL_SENDING) leaves it
        # for a retry, since another provider would send a second copy.
        open_ = list(range(len(items)))
        for provider in self.providers:
            if not open_:
                break
            held: list[int] = []
            for start in range(0, len(open_), max(1, provider.max_batch)):
                chunk = open_[start : start + max(1, provider.max_batch)]
                error = self._request_batch(provider, [items[i] for i in chunk], chunk, outcomes, held)
                if error is not None:
                    # The provider is down, throttled or refusing our credentials: the rest of the
                    # batch goes to the next provider instead of meeting the same failure.
                    rest = open_[start + len(chunk) :]
                    for index in rest:
                        outcomes[index] = error
                    if rest:
                        metrics.FAILOVERS.labels(provider.name, error.kind).inc(len(rest))
                    break
            open_ = [i for i in open_ if _unsettled(outcomes[i]) and i not in held]
        return outcomes

    def _request_batch(
        self,
        provider: Provider,
        batch: Sequence[BatchItem],
        indexes: Sequence[int],
        outcomes: list[SendResult | ProviderError],
        held: list[int],
    ) -> ProviderError | None:
        """One request of ``batch`` to ``provider``, its outcomes written at ``indexes``.

        Returns the error that failed the whole request (it is not worth asking again now), else None.
        """
        name = provider.name
        breaker = self.breakers.get(name)
        failed: ProviderError | None = None
        wait_s = self._rate_wait(name)
        if wait_s is not None:
            failed = ProviderError(name, "transient", f"rate limited for {wait_s:.1f}s", retry_after_s=wait_s)
        elif breaker is not None and not breaker.allow():
            failed = ProviderError(name, "transient", "circuit open")
        if failed is not None:
            for index in indexes:
                outcomes[index] = failed
            metrics.FAILOVERS.labels(name, "rate_limited" if wait_s else "breaker_open").inc(len(indexes))
            return failed
        results = self._attempt_batch(provider, batch)
        answered = False
        for index, result in zip(indexes, results, strict=True):
            outcomes[index] = result
            if isinstance(result, SendResult):
                answered = True
                metrics.SENT.labels(name).inc()
            elif result.kind == "rejected":
                answered = True  # the provider answered; the email was at fault
                metrics.REJECTED.labels(name).inc()
            elif result.code in STILL_SENDING:
                answered = True
                held.append(index)
            else:
                if result.outcome == "unknown":
                    metrics.UNKNOWN_OUTCOME_FAILOVERS.labels(name).inc()
                metrics.FAILOVERS.labels(name, result.kind).inc()
        if answered:
            if breaker is not None:
                breaker.record_success()
            return None
        # Every item failed without the provider taking any: one failure of one request.
        if breaker is not None:
            breaker.record_failure()
        error = results[0]
        assert isinstance(error, ProviderError)
        log.warning("email.batch_failover", provider=name, kind=error.kind, emails=len(batch))
        return error

    def _attempt_batch(
        self, provider: Provider, batch: Sequence[BatchItem]
    ) -> list[SendResult | ProviderError]:
        results = provider.send_batch(batch)
        unknown = all(isinstance(r, ProviderError) and r.outcome == "unknown" for r in results)
        if not unknown or provider.name not in IDEMPOTENT:
            return results
        # The same items make the same batch key, so asking again answers with what was done.
        log.info("email.retry_same_provider", provider=provider.name, emails=len(batch))
        return provider.send_batch(batch)

    def _attempt(
        self, provider: Provider, message: Outgoing, idempotency_key: str, envelope_to: list[str]
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


def _unsettled(outcome: SendResult | ProviderError) -> bool:
    return isinstance(outcome, ProviderError) and outcome.kind != "rejected"
