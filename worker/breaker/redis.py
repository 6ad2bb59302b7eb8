"""Breakers shared by every process and machine through Redis: one Lua script per decision.

Keys (``prefix`` is worker.keys.Keys(prefix).prefix, TASKMASTER_REDIS_PREFIX):

- ``<prefix>:breaker:<name>``: a hash holding one breaker's state; absent means closed. It
  expires: a closed breaker's failures after the window, an open or half-open breaker a
  retention period (a day) after its last decision, so breakers no one uses vanish.
- ``<prefix>:breakers``: a sorted set of the names that recorded something within the
  retention period, so that `status` lists breakers without scanning the keyspace.

The script (breaker.lua, whose header lists its KEYS and ARGV) reads the state, decides and
writes in one atomic step, so two callers on two machines can never both become the probe.
"""

from __future__ import annotations

from importlib import resources
from typing import cast

import redis

from worker.breaker.base import (
    STATES,
    BreakerBackend,
    BreakerError,
    BreakerUnavailable,
    Outcome,
    Policy,
    State,
)

DEFAULT_RETAIN_MS = 86_400_000
_SCRIPT = resources.files("worker.breaker").joinpath("breaker.lua").read_text()


def breaker_key(prefix: str, name: str) -> str:
    return f"{prefix}:breaker:{name}"


def registry_key(prefix: str) -> str:
    return f"{prefix}:breakers"


def breaker_states(client: redis.Redis, prefix: str) -> dict[str, State]:
    """Every breaker that recorded something recently, by name: for `status` and metrics."""
    try:
        names = [_text(n) for n in cast(list[bytes | str], client.zrange(registry_key(prefix), 0, -1))]
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hget(breaker_key(prefix, name), "state")
        stored = pipe.execute()
    except redis.RedisError as exc:
        raise BreakerUnavailable(
            f"reading breaker states: Redis did not answer ({type(exc).__name__})"
        ) from exc
    return {name: _state(value) for name, value in sorted(zip(names, stored, strict=True))}


class RedisBackend(BreakerBackend):
    def __init__(self, client: redis.Redis, prefix: str, *, retain_ms: int = DEFAULT_RETAIN_MS) -> None:
        self._client = client
        self._prefix = prefix
        self._retain_ms = retain_ms
        self._script = client.register_script(_SCRIPT)

    def allow(self, name: str, policy: Policy, now_ms: int | None = None) -> Outcome:
        return self._run("allow", name, policy, now_ms)

    def record_success(self, name: str, policy: Policy, now_ms: int | None = None) -> Outcome:
        return self._run("success", name, policy, now_ms)

    def record_failure(self, name: str, policy: Policy, now_ms: int | None = None) -> Outcome:
        return self._run("failure", name, policy, now_ms)

    def state(self, name: str) -> State:
        try:
            value = self._client.hget(breaker_key(self._prefix, name), "state")
        except redis.RedisError as exc:
            raise _unavailable(name, exc) from exc
        return _state(value)

    def states(self) -> dict[str, State]:
        return breaker_states(self._client, self._prefix)

    def _run(self, op: str, name: str, policy: Policy, now_ms: int | None) -> Outcome:
        keys = [breaker_key(self._prefix, name), registry_key(self._prefix)]
        args = [
            op,
            name,
            "" if now_ms is None else now_ms,
            policy.failure_threshold,
            policy.window_ms,
            policy.cooldown_ms,
            policy.probe_timeout_ms,
            self._retain_ms,
        ]
        try:
            reply = self._script(keys=keys, args=args)
        except redis.RedisError as exc:
            raise _unavailable(name, exc) from exc
        allowed, state, previous, retry_after_ms, probe, reissued, failures = reply
        return Outcome(
            state=_state(state),
            allowed=bool(allowed),
            probe=bool(probe),
            reissued=bool(reissued),
            retry_after_ms=int(retry_after_ms),
            previous=_state(previous) if previous else None,
            failures=int(failures),
        )


def _unavailable(name: str, exc: redis.RedisError) -> BreakerUnavailable:
    # The exception's type only: a connection error's text could name the server's address.
    return BreakerUnavailable(f"circuit breaker {name!r}: Redis did not answer ({type(exc).__name__})")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _state(value: bytes | str | None) -> State:
    text = "closed" if value is None else _text(value)
    for state in STATES:
        if state == text:
            return state
    raise BreakerError(f"unknown breaker state {text!r} in Redis")
