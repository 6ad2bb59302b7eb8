"""The email sender of a process: providers, breakers, rate limits and records, built once."""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass

from jobs.email.delivery import Chain
from jobs.email.providers.factory import build_providers
from jobs.email.records import DeliveryRecords, OutboxRecords, Records
from worker.breaker import CircuitBreaker
from worker.breaker import RedisBackend as BreakerBackend
from worker.ratelimit import RateLimiter, Rule
from worker.ratelimit import RedisBackend as LimiterBackend
from worker.runtime import Runtime


@dataclass(frozen=True)
class Sender:
    chain: Chain
    records: Records


_senders: dict[int, Sender] = {}
_lock = threading.Lock()


def sender_for(runtime: Runtime) -> Sender:
    """The sender of this runtime (one per process; tests may run several runtimes)."""
    sender = _senders.get(id(runtime))
    if sender is None:
        with _lock:
            sender = _senders.get(id(runtime))
            if sender is None:
                sender = _senders[id(runtime)] = build_sender(runtime)
                # Forget it with its runtime: a later runtime at the same address is another.
                weakref.finalize(runtime, _senders.pop, id(runtime), None)
    return sender


def build_sender(runtime: Runtime) -> Sender:
    settings = runtime.settings
    providers = build_providers(settings)
    breaker_backend = BreakerBackend(runtime.redis, runtime.keys.prefix)
    rates = {
        "sendgrid": settings.sendgrid_rate_per_s,
        "postmark": settings.postmark_rate_per_s,
        "resend": settings.resend_rate_per_s,
        "smtp": settings.smtp_rate_per_s,
    }
    real = [p.name for p in providers if p.name != "outbox"]  # the outbox is neither throttled nor guarded
    chain = Chain(
        providers,
        breakers={name: CircuitBreaker.from_settings(breaker_backend, name, settings) for name in real},
        limiter=RateLimiter(LimiterBackend(runtime.redis, runtime.keys)) if real else None,
        rules={name: Rule(rates[name], 1.0, burst=max(1, math.ceil(rates[name]))) for name in real},
    )
    records: Records = DeliveryRecords(runtime.db, runtime.writer) if real else OutboxRecords(runtime.reader)
    return Sender(chain=chain, records=records)
