"""``RateLimiter``: multi-level limits decided in one atomic step, concurrent decisions batched.

A delivery passes every level at once or waits, e.g. for the notification issue's three levels::

    user = Rule(limit=settings.rate_user_per_minute, period_s=60.0)
    world = Rule(limit=settings.rate_global_per_second, period_s=1.0, burst=settings.rate_global_burst)
    decision = limiter.acquire([(f"user:{user_id}", user), ("deliveries", world)])
    if not decision.allowed:
        ...  # hold the delivery for decision.retry_after_s; never drop it

Over a limit nothing is counted, so a delivery that waits does not use up room on the levels
it did pass.

Batching: threads of one process that decide at the same time share one round trip. A hand-made
combiner, because no library offers one for an arbitrary call: the first caller that finds no
batch in flight sends everything queued (its own request first); callers arriving meanwhile queue
and wait; when a batch returns, the oldest waiting caller is woken to send the next one. One batch
is in flight per limiter (two or more measured slower: batches shrink to one or two). A leader
whose last batch carried n callers waits up to ``linger_s`` for n - 1 to queue again, because a
woken thread needs the GIL before it can ask again, and without the wait the first one back
would go alone; a lone caller (last batch of one) never waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from worker.ratelimit.base import ALLOWED, Backend, Check, Decision, RateLimitError, Request

DEFAULT_MAX_BATCH = 256
# At most this long a leader waits for the callers of the last batch to queue again.
DEFAULT_LINGER_S = 0.002


class _Slot:
    """One caller's place in the queue: its request, then its outcome or the order to lead."""

    __slots__ = ("decision", "error", "lead", "ready", "request")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.ready = threading.Lock()
        self.ready.acquire()
        self.lead = False
        self.decision: Decision | None = None
        self.error: BaseException | None = None


class RateLimiter:
    """``batch=False`` sends each decision alone (a baseline for benchmarks)."""

    def __init__(
        self,
        backend: Backend,
        *,
        batch: bool = True,
        max_batch: int = DEFAULT_MAX_BATCH,
        linger_s: float = DEFAULT_LINGER_S,
    ) -> None:
        if max_batch < 1 or linger_s < 0:
            raise ValueError("max_batch must be at least 1 and linger_s not negative")
        self.backend = backend
        self._batch = batch
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._lock = threading.Lock()
        self._gathered = threading.Condition(self._lock)
        self._queue: list[_Slot] = []
        self._in_flight = False
        self._last_batch = 1
        self._awaited = 0

    def acquire(self, checks: Sequence[Check], cost: int = 1) -> Decision:
        """Count ``cost`` on every check's key if all admit it; otherwise count nothing."""
        request = Request(tuple(checks), cost)
        if not request.checks:
            return ALLOWED
        if not self._batch:
            return self.backend.decide([request])[0]
        return self._combined(request)

    def book_many(self, requests: Sequence[Sequence[Check]], cost: int = 1) -> list[Decision]:
        """For each of ``requests``, in order, in one round trip: admitted now, or booked the
        first slot it would get (``retry_after_s``), which it then takes without asking again.

        A caller that holds what was refused and asks again on release would find the room
        taken by others held as long, all told to come back at the same moment: under a
        sustained overload each would be refused and held again and again.
        """
        wanted = [Request(tuple(checks), cost) for checks in requests]
        asked = [r for r in wanted if r.checks]
        answers = iter(self.backend.decide(asked, book=True) if asked else [])
        return [next(answers) if r.checks else ALLOWED for r in wanted]

    def peek(self, checks: Sequence[Check], cost: int = 1) -> Decision:
        """What ``acquire`` would answer now, counting nothing."""
        request = Request(tuple(checks), cost)
        if not request.checks:
            return ALLOWED
        return self.backend.decide([request], commit=False)[0]

    def wait(self, checks: Sequence[Check], cost: int = 1, *, timeout_s: float) -> Decision:
        """Acquire, sleeping as told, until admitted or until the next try would pass ``timeout_s``.

        Returns the admitting decision, or the last refusal (its ``retry_after_s`` says when to
        come back) without sleeping into a wait that would end past the deadline.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            decision = self.acquire(checks, cost)
            if decision.allowed or decision.retry_after_s > deadline - time.monotonic():
                return decision
            time.sleep(decision.retry_after_s)

    def reset(self, keys: Sequence[str]) -> None:
        self.backend.reset(keys)

    @property
    def queued(self) -> int:
        """Decisions waiting for the round trip in flight to return (for metrics and tests)."""
        with self._lock:
            return len(self._queue)

    def _combined(self, request: Request) -> Decision:
        slot = _Slot(request)
        with self._lock:
            if not self._in_flight:
                self._in_flight = True
                slot.lead = True
            else:
                self._queue.append(slot)
                if self._awaited and len(self._queue) >= self._awaited:
                    self._gathered.notify()
        if not slot.lead:
            slot.ready.acquire()  # released with our decision, or with the lead
        if slot.lead:
            self._fly(slot)
        if slot.error is not None:
            if slot.lead:
                raise slot.error
            # A fresh exception per waiting thread: one instance raised in several threads
            # would collect all their tracebacks.
            raise _copy(slot.error) from slot.error
        assert slot.decision is not None
        return slot.decision

    def _fly(self, own: _Slot) -> None:
        """Send our request with the oldest queued ones, then hand the lead to the next in line."""
        batch = [own]
        # Everything sits in one try, so even an exception raised into this thread (Dramatiq's
        # time limit) hands the lead on instead of leaving the limiter in flight forever.
        try:
            with self._lock:
                # The callers the last batch carried are likely on their way back: wait for
                # them (briefly) so they share this round trip instead of each going alone.
                self._awaited = min(self._last_batch, self._max_batch) - 1
                if len(self._queue) < self._awaited:
                    self._gathered.wait(self._linger_s)
                self._awaited = 0
                taken = self._queue[: self._max_batch - 1]
                del self._queue[: self._max_batch - 1]
                batch += taken
                self._last_batch = len(batch)
            decisions = self.backend.decide([slot.request for slot in batch])
            for slot, decision in zip(batch, decisions, strict=True):
                slot.decision = decision
        except BaseException as exc:
            for slot in batch:
                slot.error = exc
        finally:
            with self._lock:
                successor = self._queue.pop(0) if self._queue else None
                if successor is None:
                    self._in_flight = False
                else:
                    successor.lead = True
            if successor is not None:
                successor.ready.release()
            for slot in batch[1:]:
                slot.ready.release()


def _copy(error: BaseException) -> BaseException:
    if isinstance(error, RateLimitError):
        return type(error)(*error.args)
    return RateLimitError(f"a batched rate limit decision failed: {type(error).__name__}")
